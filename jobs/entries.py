"""One submitit-compatible callable per stage.

A StageJob carries the resolved config (plain data, small to pickle) and the run directory;
calling it runs the stage in-process exactly as the CLI does. It is Checkpointable: on SIGUSR2
(preemption or the time limit) the stage saves and stops, then submitit requeues the same call,
which resumes from the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import submitit

from jobs import slurm_env
from worldmodels.stages import run_stage

log = logging.getLogger("worldmodels")


class StageJob(submitit.helpers.Checkpointable):
    """`StageJob(stage, config_dict, run_dir)(task, num_tasks)` runs one stage (or one task of it)."""

    def __init__(self, stage: str, config: dict[str, Any], run_dir: str):
        self.stage, self.config, self.run_dir = stage, config, run_dir

    def __call__(self, task: int = 0, num_tasks: int = 1) -> str:
        from worldmodels import config as config_lib
        from worldmodels.errors import Interrupted
        from worldmodels.tracking import setup_logging

        setup_logging()
        info = slurm_env.attempt()
        log.info("%s: job %s attempt %d (restart count %d) on %s%s", self.stage, info["job_id"], info["restart"] + 1,
                 info["restart"], info["host"], f" in container {info['container']}" if info["container"] else "")
        cfg = config_lib.from_dict(self.config)
        try:
            line = run_stage(self.stage, cfg, Path(self.run_dir), task, num_tasks)
        except Interrupted as exc:
            log.info("%s: progress saved after signal %d", self.stage, exc.signum)
            slurm_env.requeue_after_preemption(exc.signum)
            raise
        if line:
            log.info("%s", line)
        return line
