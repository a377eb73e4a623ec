"""A sweep: one run directory per point of a grid of settings and seeds, each a branch of one base.

    SWEEP_DIR/sweep.json     the sweep: its config, its grid and the base every point branches from
    SWEEP_DIR/POINT/         one run directory per point, named after its values (mode=dream_seed=2)

Every point is a run like any other: resumable, preemptible, and reusing the base's finished stages
whose identity it shares (so a sweep over `controller.seed` from a finished run trains one V and M,
the base's, and as many controllers as points). Locally the points run one after the other
(`run_locally`); on Slurm each stage becomes one array job across the points that need it (jobs/submit.py).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodels import config as config_lib
from worldmodels.config import Config
from worldmodels.errors import ConfigError
from worldmodels.files import atomic_write, read_json
from worldmodels.rundir import RunDir
from worldmodels.tracking import log

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Point:
    name: str
    overrides: tuple[str, ...]  # key=value, one per grid axis
    run_dir: Path


class Sweep:
    def __init__(self, directory: Path, cfg: Config, grid: dict[str, list[str]], base: Path | None):
        self.directory, self.config, self.grid, self.base = directory, cfg, grid, base

    # --- making and opening ----------------------------------------------------------------------

    @classmethod
    def define(cls, directory: str | Path, cfg: Config, grid_args: list[str], base: str | Path | None = None) -> "Sweep":
        """The sweep of these settings in `directory`: a new one, or the one saved there when it was made
        with the same config, grid and base. Nothing is written until `save` (once the sweep is accepted)."""
        directory = Path(directory)
        grid: dict[str, list[str]] = {}
        for item in grid_args:
            key, sep, values = item.partition("=")
            if not sep or not key or not values:
                raise ConfigError(f"grid entry '{item}' must look like key.sub=a,b,c")
            if key in grid:
                raise ConfigError(f"grid key '{key}' is given twice")
            grid[key] = values.split(",")
        if RunDir(directory).config_file.is_file():
            raise ConfigError(f"--sweep-dir {directory} is a run directory: use a new sweep folder")
        if base is not None:
            from worldmodels.identity import open_base

            open_base(Path(base))  # refused before the sweep's folder is made
        sweep = cls(directory, cfg, grid, Path(base).resolve() if base is not None else None)
        made: dict[str, str] = {}
        for point in sweep.points:  # every point's config must be valid, and its own, before anything is written
            text = config_lib.dump(sweep.config_of(point))
            if text in made and not cls.is_sweep(directory):  # a value given twice, as written (1,1) or as read (1,01)
                raise ConfigError(f"grid points {made[text]} and {point.name} give the same config: give each value once")
            made[text] = point.name
        from worldmodels.identity import ADDED_SINCE_FORMAT, OPERATIONAL

        saved, mine = read_json(directory / SWEEP_FILE), sweep._record()
        if saved is not None:
            for key, before in ADDED_SINCE_FORMAT.items():  # saved before the key existed: it behaved as this value
                section, _, leaf = key.rpartition(".")
                saved.get("config", {}).get(section, {}).setdefault(leaf, before)
            # the grid's keys in order too: they name the points' folders
            changed = ["grid"] if list(saved.get("grid", {}).items()) != list(mine["grid"].items()) else []
            changed += ["base"] if saved.get("base") != mine["base"] else []
            changed += [line for line in config_lib.diff(saved.get("config", {}), mine["config"])
                        if line.split(":")[0] not in OPERATIONAL]
            if changed:
                raise ConfigError(f"sweep {directory} was made with other settings ({'; '.join(changed)}); "
                                  "use a new sweep folder")
        return sweep

    def save(self) -> None:
        """Write the sweep's file (its operational settings may have changed since the last time)."""
        mine = self._record()
        if read_json(self.directory / SWEEP_FILE) != mine:
            atomic_write(self.directory / SWEEP_FILE, json.dumps(mine, indent=1).encode())

    @classmethod
    def open(cls, directory: str | Path) -> "Sweep":
        directory = Path(directory)
        saved = read_json(directory / SWEEP_FILE)
        if saved is None:
            raise ConfigError(f"{directory} is not a sweep folder (no {SWEEP_FILE})")
        return cls(directory, config_lib.from_dict(saved["config"]), saved["grid"],
                   Path(saved["base"]) if saved.get("base") else None)

    @staticmethod
    def is_sweep(directory: str | Path) -> bool:
        return (Path(directory) / SWEEP_FILE).is_file()

    def _record(self) -> dict[str, Any]:
        return {"config": config_lib.to_dict(self.config), "grid": self.grid,
                "base": str(self.base) if self.base else None}

    # --- the points ------------------------------------------------------------------------------

    @property
    def points(self) -> list[Point]:
        keys = list(self.grid)
        leaves = [key.rpartition(".")[2] for key in keys]
        # a point is named by the last part of each key (`seed`), or the whole key where two would clash
        short = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]
        out = []
        for values in itertools.product(*self.grid.values()):
            name = "_".join(f"{s}={v}" for s, v in zip(short, values)).replace("/", "-")
            out.append(Point(name, tuple(f"{k}={v}" for k, v in zip(keys, values)), self.directory / name))
        return out

    def config_of(self, point: Point) -> Config:
        return config_lib.override(self.config, list(point.overrides))

    def run_locally(self) -> None:
        """Every stage of every point, one point after the other, in this process."""
        from worldmodels import identity
        from worldmodels.pipeline import run_stage
        from worldmodels.rounds import round_base, round_config, round_path
        from worldmodels.stages import STAGES

        for point in self.points:  # a point that would be refused is refused before any runs or is written
            identity.decide(self.config_of(point), point.run_dir, list(STAGES)[-1], self.base)
        self.save()
        for i, point in enumerate(self.points):
            log.info("sweep: point %d/%d %s", i + 1, len(self.points), point.name)
            cfg = self.config_of(point)
            for k in range(cfg.rounds.count):  # iterative training: every round, in order
                for stage in STAGES:
                    log.info("%s", run_stage(stage, round_config(cfg, k), round_path(point.run_dir, k),
                                             base=round_base(self.base, k)))

    def format_status(self, points: dict[str, dict[str, Any] | None]) -> str:
        """A table for people: one line per point with the state of each stage."""
        from worldmodels.stages import STAGES

        width = max(len(name) for name in points)
        lines = [f"sweep {self.directory} ({len(points)} points" + (f", branched from {self.base})" if self.base else ")"),
                 f"  {'point':<{width}}  " + " ".join(f"{s:<16}" for s in STAGES)]
        for name, status in points.items():
            cells = []
            for stage in STAGES:
                info = (status or {}).get("stages", {}).get(stage, {"state": "pending"})
                cells.append(f"{info['state'] + (' (reused)' if 'reused_from' in info else ''):<16}")
            lines.append(f"  {name:<{width}}  " + " ".join(cells))
        return "\n".join(lines)
