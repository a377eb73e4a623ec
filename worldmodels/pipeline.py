"""Running a stage: the one call behind every stage name, from the CLI, a Slurm job or a sweep.

Its config is checked first (nothing is written for a config that cannot run), then the run
directory is opened for the stage (worldmodels.identity: its identity checked or recorded, reused
from a base run where a branch allows), and only then does the stage's function run, unless the
stage is reused, in which case there is nothing to do.
"""

from __future__ import annotations

from pathlib import Path

from worldmodels import identity
from worldmodels.config import Config
from worldmodels.stages import STAGES, chain


def run_stage(name: str, cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1,
              base: str | Path | None = None) -> str:
    """Run one stage (one task of it for task stages) in-process, after checking its identity (and
    branching from `base`); returns a line for people (empty on MPI ranks that only serve the master)."""
    stage = STAGES[name]
    for needed in chain(name):
        STAGES[needed].check_config(cfg)
    run = identity.begin(cfg, run_dir, name, base)
    if run.owner(name) is not run:
        return f"{name}: reused from {run.owner(name).path} (finished there with the same identity)"
    if stage.tasks:
        return stage.function()(cfg, run.path, task, num_tasks)
    return stage.function()(cfg, run.path)
