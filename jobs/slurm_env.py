"""The one place that reads Slurm's environment and hands a preemption back to submitit."""

from __future__ import annotations

import os
import signal


def in_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def job_id() -> str | None:
    """The job's id as squeue shows it (ARRAYJOB_TASK for array tasks)."""
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times Slurm has requeued this job (0 on the first attempt)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0") or 0)


def attempt() -> dict[str, object]:
    """What a job log line and the stage state record say about this attempt."""
    return {"job_id": job_id(), "restart": restart_count(), "host": os.environ.get("SLURMD_NODENAME"),
            "rank": global_rank()}


def requeue_after_preemption(signum: int) -> None:
    """Hand a preemption the stage has already checkpointed back to submitit.

    The stage caught SIGUSR2, saved and stopped; its signal handler is gone again, so sending
    SIGUSR2 to ourselves reaches submitit's handler, which calls the job's checkpoint() and
    requeues it (`scontrol requeue`) before exiting. SIGTERM means "cancelled": no requeue.
    """
    if signum == signal.SIGUSR2 and in_slurm():
        os.kill(os.getpid(), signal.SIGUSR2)
