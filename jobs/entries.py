"""The submitit callable behind every stage.

`StageJob(stage)(config, run_dir, task, num_tasks)` runs one stage (or one task of it) of one run
in-process, exactly as the CLI does; the config travels as plain data (small to pickle), so one
array job can hold tasks of many runs (the points of a sweep). It is Checkpointable: on SIGUSR2
(preemption or the time limit) the stage saves and stops, then submitit requeues the same call,
which resumes from the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import submitit

from jobs import mpi_start, slurm_env
from worldmodels import heartbeat
from worldmodels.pipeline import run_stage
from worldmodels.stages import STAGES

log = logging.getLogger("worldmodels")


class StageJob(submitit.helpers.Checkpointable):
    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, config: dict[str, Any], run_dir: str, task: int = 0, num_tasks: int = 1) -> str:
        from worldmodels import config as config_lib
        from worldmodels.errors import Interrupted
        from worldmodels.tracking import setup_logging

        setup_logging()
        heartbeat.on_silence(slurm_env.requeue_now)
        cpus = slurm_env.cpus_per_task()
        if cpus:
            # torch starts a thread per core of the node by default: on a shared node, or with one
            # MPI rank per core, that is many times more threads than cores, and runs ten times slower
            import torch

            torch.set_num_threads(cpus)
        info = slurm_env.attempt()
        log.info("%s: job %s attempt %d (restart count %d) on %s%s for %s", self.stage, info["job_id"], info["restart"] + 1,
                 info["restart"], info["host"], f" in container {info['container']}" if info["container"] else "", run_dir)
        cfg = config_lib.from_dict(config)
        if STAGES[self.stage].mpi:
            mpi_start.start(mpi_start.job_folder())  # a rank that dies here has the job requeued
        try:
            line = run_stage(self.stage, cfg, Path(run_dir), task, num_tasks, job=info["job_id"])
        except Interrupted as exc:
            log.info("%s: progress saved after signal %d", self.stage, exc.signum)
            slurm_env.requeue_after_preemption(exc.signum)
            raise
        if line:
            log.info("%s", line)
        return line
