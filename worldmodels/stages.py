"""The pipeline's stages, one record each: everything the CLI, `submit`, `status`, `report` and the
tests know about a stage.

A record names the function that runs the stage, the stages it reads from, the config it depends
on (which makes its identity, see worldmodels.identity), whether it splits into tasks or runs as
MPI ranks, how much work it has, how far it has come, and the pictures it leaves for the report.
Adding a stage is adding a record here (and the module that does the work). `push` is not a
stage: it runs from the CLI only, when a person asks for it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from worldmodels.config import Config
from worldmodels.rundir import RunDir

Progress = Callable[[RunDir, Config], tuple[int, dict[str, Any]]]  # -> (units done (-1: nothing yet), counters for status)


@dataclass(frozen=True)
class Stage:
    name: str
    help: str  # one line for --help and `make help`
    entry: str  # "module:function", called as function(cfg, run_dir) or, for task stages, (cfg, run_dir, task, num_tasks)
    units: Callable[[Config], int]  # how much work the stage has (episodes, steps, generations)
    progress: Progress  # how much of it is done, read from the artifacts
    upstream: tuple[str, ...] = ()  # stages whose artifacts it reads
    config: tuple[str, ...] = ()  # config sections or keys its results depend on, beyond its upstream's
    tasks: bool = False  # splits into tasks owning disjoint episodes (a Slurm array job)
    mpi: bool = False  # runs as MPI ranks (one Slurm job of nodes x tasks under srun --mpi=pmix)
    figures: tuple[tuple[str, str], ...] = ()  # pictures it leaves in report/: (file, title)
    check: str = ""  # "module:function": checks the config can run (function(cfg)) before anything is written
    needs: Callable[[Config], tuple[str, ...]] | None = None  # the stages it needs finished first (default: upstream)

    def inputs(self, cfg: Config) -> tuple[str, ...]:
        """The stages that must have finished before this one starts."""
        return self.upstream if self.needs is None else self.needs(cfg)

    def function(self) -> Callable[..., str]:
        return _resolve(self.entry)


def _resolve(entry: str) -> Callable[..., Any]:
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


# --- progress, read from each stage's artifacts ------------------------------------------------------


def encoded_episodes(cfg: Config) -> int:
    """Round k encodes the episodes of rounds 0..k (worldmodels.rounds)."""
    return cfg.collect.episodes * (cfg.rounds.index + 1)


def _episodes(path: Callable[[RunDir], Path], total: Callable[[Config], int] = lambda cfg: cfg.collect.episodes) -> Progress:
    def progress(run: RunDir, cfg: Config) -> tuple[int, dict[str, Any]]:
        from worldmodels.dataset import EpisodeStore

        store = path(run)
        lengths = EpisodeStore.open(store).lengths() if store.exists() else []
        done = int((lengths > 0).sum()) if len(lengths) else 0
        return done, {"episodes_done": done, "episodes_total": total(cfg), "frames": int(sum(lengths))}

    return progress


def _steps(stage: str, total: Callable[[Config], int]) -> Progress:
    def progress(run: RunDir, cfg: Config) -> tuple[int, dict[str, Any]]:
        from worldmodels.checkpoint import latest_step

        step = latest_step(run.checkpoints(stage))
        # -1 without any checkpoint: a stage of 0 steps (an untrained model) is done once it saved step 0
        return (-1 if step is None else step), {"step": step or 0, "total_steps": total(cfg)}

    return progress


def _generations(run: RunDir, cfg: Config) -> tuple[int, dict[str, Any]]:
    from worldmodels.checkpoint import latest_step
    from worldmodels.files import read_json

    directory = run.checkpoints("train-controller")
    generation = latest_step(directory) or 0
    out: dict[str, Any] = {"generation": generation, "total_generations": cfg.controller.generations}
    if generation:
        out["best_fitness"] = (read_json(directory / f"step-{generation:09d}.json") or {}).get("best_fitness")
    return generation, out


def _evaluated(run: RunDir, cfg: Config) -> tuple[int, dict[str, Any]]:
    """The first protocol's mean and std, then each other protocol's mean (mean_sticky, ...)."""
    from worldmodels.scores import blocks

    results = run.results()
    if results is None:
        return 0, {}
    others = {f"mean_{name}": block["mean"] for name, block in list(blocks(results).items())[1:]}
    return cfg.evaluate.episodes, {"mean": results["mean"], "std": results["std"], **others}


def _reported(run: RunDir, cfg: Config) -> tuple[int, dict[str, Any]]:
    return int((run.owner("report").report_dir / "index.html").is_file()), {}


# --- the records -------------------------------------------------------------------------------------

_RECORDS = (
    Stage("collect", "play episodes with collect.policy into RUN_DIR/data/rollouts.zarr",
          "worldmodels.collect:collect", units=lambda cfg: cfg.collect.episodes,
          progress=_episodes(lambda run: run.rollouts), config=("seed", "env", "collect", "rounds.index", "rounds.explore"), tasks=True,
          check="worldmodels.collect:check"),
    Stage("train-vae", "train V, the VAE, on the rollouts into RUN_DIR/checkpoints/vae",
          "worldmodels.train_vae:train_vae", units=lambda cfg: cfg.vae.steps,
          progress=_steps("train-vae", lambda cfg: cfg.vae.steps), upstream=("collect",), config=("vae",),
          figures=(("train-vae-loss.png", "V: VAE training loss"),
                   ("vae-reconstructions.png", "V: frames and their reconstructions"))),
    Stage("encode", "encode every episode to mu/logvar in RUN_DIR/data/latents.zarr",
          "worldmodels.encode:encode", units=encoded_episodes,
          progress=_episodes(lambda run: run.latents, encoded_episodes), upstream=("train-vae",), config=("encode", "vae.precision"), tasks=True,
          needs=lambda cfg: ("collect",) if cfg.encode.vae else ("train-vae",)),  # encode.vae: a V from elsewhere
    Stage("train-mdnrnn", "train M, the MDN-RNN, on the latents into RUN_DIR/checkpoints/mdnrnn",
          "worldmodels.train_mdnrnn:train_mdnrnn", units=lambda cfg: cfg.mdnrnn.steps,
          progress=_steps("train-mdnrnn", lambda cfg: cfg.mdnrnn.steps), upstream=("encode",), config=("mdnrnn",),
          figures=(("train-mdnrnn-loss.png", "M: MDN-RNN training loss"),
                   ("mdnrnn-dreams.png", "M: dreams decoded by V"))),
    # tau only shapes dreams: M's training does not depend on it, the controller's does
    Stage("train-controller", "find C with CMA-ES (MPI ranks when under mpirun/srun) into RUN_DIR/checkpoints/controller",
          "worldmodels.evolution:train_controller", units=lambda cfg: cfg.controller.generations,
          progress=_generations, upstream=("train-mdnrnn",), config=("controller", "mdnrnn.tau"), mpi=True,
          figures=(("controller-fitness.png", "C: CMA-ES fitness per generation"),)),
    Stage("evaluate", "score C, the random policy and fixed heuristics into RUN_DIR/eval/results.json",
          "worldmodels.evaluate:evaluate", units=lambda cfg: cfg.evaluate.episodes,
          progress=_evaluated, upstream=("train-controller",), config=("evaluate",), tasks=True,
          figures=(("eval-scores.png", "Evaluation: controller against the baselines"),)),
    Stage("report", "write RUN_DIR/report/index.html from everything the run has made",
          "worldmodels.report:write_report", units=lambda cfg: 1, progress=_reported, upstream=("evaluate",)),
)
STAGES: dict[str, Stage] = {stage.name: stage for stage in _RECORDS}  # in pipeline order


def check_config(name: str, cfg: Config) -> None:
    """Refuse, before anything is written, a config that `name` or a stage it reads from cannot run (Stage.check)."""
    for needed in chain(name):
        if STAGES[needed].check:
            _resolve(STAGES[needed].check)(cfg)


def chain(name: str) -> list[str]:
    """`name` and every stage it reads from, directly or not, in pipeline order."""
    needed = {name}
    for stage in reversed(_RECORDS):
        if stage.name in needed:
            needed.update(stage.upstream)
    return [stage for stage in STAGES if stage in needed]
