"""Progress and metrics for every stage: a bar on a terminal, plain lines in batch logs, wandb.

wandb runs offline unless the user sets WANDB_MODE (e.g. `online`, with WANDB_API_KEY in the
environment, which is never printed or saved here). All runs of one run directory share a wandb
group, and each stage (or task) has a stable run id, so a requeued or resumed attempt resumes
the same wandb run with its step axis continuing where the checkpoint left off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from worldmodels import config as config_lib
from worldmodels.config import Config
from worldmodels.files import read_json
from worldmodels.rundir import RunDir

log = logging.getLogger("worldmodels")
HEARTBEAT_S = 10.0  # how often the stage's state file is refreshed while it runs


def setup_logging() -> None:
    """Plain timestamped lines on stderr: readable in a terminal and in a Slurm log."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class Tracker:
    """Progress of one stage (or one task of it) towards `total` units, plus its metrics.

    Used as a context manager, it records how the stage ended: done, interrupted or failed.
    `kernels`: the fingerprint of the CPU kernels a data stage's results depend on
    (worldmodels.device.kernels_on), kept in its state record; resuming work that other kernels
    began is warned about. (Training stages keep theirs with their checkpoints.)
    """

    def __init__(self, cfg: Config, run: RunDir, stage: str, *, total: int, unit: str,
                 done: int = 0, task: int | None = None, kernels: str | None = None):
        setup_logging()
        self.cfg, self.run, self.stage, self.task = cfg, run, stage, task
        self.total, self.unit, self.done = total, unit, done
        self.name = stage if task is None else f"{stage}[task {task}]"
        self._start = self._last_line = self._last_beat = time.monotonic()
        self._start_done = done
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, unit=f" {unit}", desc=self.name, dynamic_ncols=True)
        self._wandb = self._start_wandb()
        self._kernels = {"kernels": kernels} if kernels else {}
        made = (read_json(run.state_file(stage, task)) or {}).get("kernels") if kernels and done else None
        if made and made != kernels:
            from worldmodels.device import kernels_warning

            log.warning(kernels_warning(f"{self.name}: the {done} {unit} already done were made", made, kernels))
        self._write_state("running")
        log.info("%s: %d/%d %s already done", self.name, done, total, unit)

    def _start_wandb(self) -> Any:
        if not self.cfg.logging.wandb or os.environ.get("WANDB_MODE") == "disabled":
            return None
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        directory = self.run.wandb_dir
        directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(project=self.cfg.logging.project, group=self.run.group_name(),
                          job_type=self.stage, name=self.name, dir=str(directory),
                          id=self.run.run_id(self.name), resume="allow",
                          config=config_lib.to_dict(self.cfg), reinit="create_new")

    def advance(self, n: int = 1, **metrics: float) -> None:
        """Count `n` finished units; `metrics` describe the last of them (logged at the new count)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if metrics:
            self.log(metrics)
        if self.run.vanished():  # before anything else is written, which would half recreate it
            from worldmodels.errors import vanished

            raise vanished(self.run.path, f"{self.name} ran")
        now = time.monotonic()
        if self._bar is None and now - self._last_line >= self.cfg.logging.every_s:
            self._last_line = now
            log.info("%s: %s", self.name, self._progress_line(now))
        if now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            self._write_state("running")

    def _write_state(self, state: str, **extra: Any) -> None:
        """This stage's (or task's) state record: its progress, and the kernels doing the work."""
        self.run.write_state(self.stage, state, self.task, done=self.done, total=self.total, **self._kernels, **extra)

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Send metrics to wandb at `step` (default: the progress count)."""
        if self._wandb is not None:
            self._wandb.log(metrics, step=self.done if step is None else step)

    def images(self, pictures: dict[str, Path]) -> None:
        """Send pictures (PNG files) to wandb under their keys, at the current count."""
        if self._wandb is not None:
            import wandb

            self.log({key: wandb.Image(str(path), caption=path.name) for key, path in pictures.items()})

    def videos(self, videos: dict[str, tuple[Path, str]]) -> None:
        """Send MP4 files to wandb: {key: (path, caption)}, at the current count."""
        if self._wandb is not None:
            import wandb

            self.log({key: wandb.Video(str(path), caption=caption, format="mp4") for key, (path, caption) in videos.items()})

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Send a table to wandb, at the current count."""
        if self._wandb is not None:
            import wandb

            self.log({key: wandb.Table(columns=columns, data=rows)})

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        from worldmodels.errors import Interrupted

        if exc is None:
            self.close("done")
        elif isinstance(exc, (Interrupted, KeyboardInterrupt)):
            self.close("interrupted")
        else:
            self.close("failed", error=f"{type(exc).__name__}: {exc}")

    def close(self, state: str, **extra: Any) -> None:
        """Record the final state (done, interrupted, failed) and flush everything."""
        if self._bar is not None:
            self._bar.close()
        if not self.run.vanished():  # a removed run directory is not recreated to say so
            self._write_state(state, **extra)
        log.info("%s: %s, %s", self.name, state, self._progress_line(time.monotonic()))
        if self._wandb is not None:
            self._wandb.finish(exit_code=0 if state == "done" else 1)

    def _progress_line(self, now: float) -> str:
        rate = (self.done - self._start_done) / max(now - self._start, 1e-9)
        line = f"{self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%), {rate:.2f} {self.unit}/s"
        if 0 < rate and self.done < self.total:
            line += f", eta {_duration((self.total - self.done) / rate)}"
        return line


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
