"""Iterative training: rounds of collect, V, M and C, each round learning from the one before.

The paper's fix for a world model that has only seen random play: play the trained controller,
add what it sees to the data, retrain, repeat. With `rounds.count: K`, round 0 is the run directory
itself (the plain pipeline) and round k >= 1 is the run directory RUN_DIR/rounds/k, holding every
stage once more under the same config with `rounds.index: k` (which is what `--round k` sets):

- collect plays round k-1's V, M and C, handing over to a random action (held 1..
  collect.action_repeat_max steps) with probability `rounds.explore` at each step, so that the
  new episodes reach the states a better policy reaches and some it would not choose;
- train-vae trains on the frames of rounds 0..k, starting from round k-1's V (weights and Adam's
  moments); encode encodes every round's episodes with the new V; train-mdnrnn trains on all of
  them starting from round k-1's M;
- train-controller continues round k-1's CMA-ES (mean, covariance, step size, sampler state);
- evaluate plays the same episode seeds as every other round, so scores compare across rounds.

A round's stages are ordinary stages of an ordinary run directory: resumable, preemptible and
identical on rerun; their identity holds the round index, and the random streams of a round are
its own (worldmodels.seeds), except the evaluation's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError
from worldmodels.rundir import RunDir

if TYPE_CHECKING:
    from worldmodels.dataset import EpisodeStore

FOLDER = "rounds"
# the last stage of round k-1 that round k trains from (its controller plays round k's collect)
CONTINUES = "train-controller"
# on Slurm, the stages of round k that wait for a stage of round k-1 (besides the stage before them):
# collect for CONTINUES, so that round k runs beside round k-1's evaluation; evaluate for round k-1's
# evaluate, since it takes round 0's baseline scores and its report shows every round's score
WAITS_FOR_PREVIOUS = {"collect": CONTINUES, "evaluate": "evaluate"}


def round_path(run_dir: str | Path, k: int) -> Path:
    """Where round k of the run in `run_dir` (its round 0) lives."""
    return Path(run_dir) if k == 0 else Path(run_dir) / FOLDER / str(k)


def round_base(base: str | Path | None, k: int) -> Path | None:
    """Round k of a branch's BASE, where BASE has one (a branch's later rounds reuse what matches there)."""
    if base is None:
        return None
    path = round_path(base, k)
    return path if k == 0 or (path / "config.yaml").is_file() else None


def round_config(cfg: Config, k: int) -> Config:
    """`cfg` for round k (refused when the config has fewer rounds)."""
    if not 0 <= k < cfg.rounds.count:
        raise ConfigError(f"--round {k}: the config has rounds.count={cfg.rounds.count} (rounds 0..{cfg.rounds.count - 1})")
    return dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, index=k))


def first_round(run: RunDir, cfg: Config) -> Path:
    """Round 0's run directory, from the run directory of round `cfg.rounds.index`."""
    k = cfg.rounds.index
    if k == 0:
        return run.path
    if run.path.parent.name != FOLDER or run.path.name != str(k):
        raise ConfigError(f"rounds.index={k} belongs in RUN_DIR/{FOLDER}/{k}, not in {run.path} (use --round {k} "
                          "with the run directory of round 0)")
    return run.path.parent.parent


def previous(run: RunDir, cfg: Config) -> tuple[RunDir, Config]:
    """Round k-1's run directory and config, checked to be the round this one continues: made with
    this config (but for the round index) and with its controller trained."""
    from worldmodels.identity import differences, identity

    k = cfg.rounds.index
    prev_cfg = round_config(cfg, k - 1)
    prev = RunDir(round_path(first_round(run, cfg), k - 1))
    record = prev.stage_record(CONTINUES)
    if record is None:
        raise DataError(f"round {k} continues round {k - 1} in {prev.path}, whose {CONTINUES} has not run; run it first")
    given = identity(prev_cfg, CONTINUES)
    if record["identity"] != given:
        raise ConfigError(f"round {k - 1} in {prev.path} was trained with other values "
                          f"({'; '.join(differences(record['identity'], given))}); every round shares one config")
    from worldmodels.stages import STAGES

    prev.finished_checkpoint(CONTINUES, STAGES[CONTINUES].units(prev_cfg))  # a clear error if unfinished
    return prev, prev_cfg


def rounds_so_far(run: RunDir, cfg: Config) -> list[tuple[RunDir, Config]]:
    """(run directory, config) of rounds 0..k, k being this run's round."""
    root = first_round(run, cfg)
    return [(RunDir(round_path(root, j)), round_config(cfg, j)) for j in range(cfg.rounds.index + 1)]


def rollouts(run: RunDir, cfg: Config) -> list["EpisodeStore"]:
    """The finished rollouts of rounds 0..k, in round order: V's data, and what encode encodes."""
    return [r.finished_rollouts() for r, _ in rounds_so_far(run, cfg)]


def continued_checkpoint(run: RunDir, cfg: Config, stage: str) -> Path | None:
    """The checkpoint a training stage of round k >= 1 starts from (round k-1's final one); None in round 0."""
    if cfg.rounds.index == 0:
        return None
    from worldmodels.stages import STAGES

    prev, prev_cfg = previous(run, cfg)
    return prev.finished_checkpoint(stage, STAGES[stage].units(prev_cfg))


def collecting_policy(cfg: Config, run: RunDir, num_actions: int, batch: int):
    """Round k-1's V, M and C, exploring (see the module docstring): round k's behaviour policy."""
    import torch

    from worldmodels.controller import WorldModelPolicy, controller_size
    from worldmodels.policies import ExploringPolicy

    prev, prev_cfg = previous(run, cfg)
    vae, mdnrnn = prev.load_world_model(prev_cfg)
    solution, _ = prev.load_controller(prev_cfg, controller_size(cfg.vae.z_size, mdnrnn.hidden, mdnrnn.actions,
                                                                 cfg.controller.inputs))
    controller = WorldModelPolicy(vae, mdnrnn, torch.from_numpy(solution[None]), batch, cfg.controller.inputs)
    return ExploringPolicy(controller, num_actions, cfg.rounds.explore, cfg.collect.action_repeat_max, batch)


def later_rounds(run_dir: str | Path) -> list[tuple[int, RunDir]]:
    """(round, run directory) of the rounds after round 0 (`run_dir`) that have begun, in order."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted((int(p.name), RunDir(p)) for p in folder.iterdir() if p.name.isdigit() and (p / "config.yaml").is_file())


def score_rows(run: RunDir, cfg: Config) -> list[list[str]]:
    """[round, mean under each protocol (the first is the headline)...] of rounds 0..k so far."""
    from worldmodels.scores import blocks

    rows = []
    for j, (r, _) in enumerate(rounds_so_far(run, cfg)):
        results = r.results()
        means = {name: f"{block['mean']:.1f}" for name, block in blocks(results).items()} if results else {}
        rows.append([str(j), *(means.get(p, "not evaluated") for p in cfg.evaluate.protocols)])
    return rows
