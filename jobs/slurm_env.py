"""The one place that reads Slurm's environment and hands a preemption back to submitit."""

from __future__ import annotations

import os
import signal
import time

RANK_WAITS_S = 300.0  # how long a rank other than 0 waits for rank 0's requeue to end the job step


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


def cpus_per_task() -> int | None:
    """The CPUs Slurm gave each task of this job (None outside Slurm or when not set)."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() else None


def global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0") or 0)


def attempt() -> dict[str, object]:
    """What a job log line and the stage state record say about this attempt."""
    return {"job_id": job_id(), "restart": restart_count(), "host": os.environ.get("SLURMD_NODENAME"),
            "rank": global_rank(), "container": os.environ.get("WORLDMODELS_CONTAINER")}


def requeue_now() -> None:
    """Ask Slurm to requeue this job at once (a rank went silent: worldmodels.heartbeat). Inside a
    container Slurm's tools may be absent: the ranks' exit code then makes containers/run.sh do it."""
    import subprocess

    if in_slurm() and not in_container():
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True, timeout=60,
                       capture_output=True)


def in_container() -> bool:
    """True inside containers/run.sh (which names the image), which requeues from outside."""
    return bool(os.environ.get("WORLDMODELS_CONTAINER"))


def requeue_after_preemption(signum: int) -> None:
    """Hand a preemption the stage has already checkpointed back to submitit.

    The stage caught SIGUSR2, saved and stopped; its signal handler is gone again, so sending
    SIGUSR2 to ourselves reaches submitit's handler, which calls the job's checkpoint() and
    requeues it (`scontrol requeue`) before exiting. SIGTERM means "cancelled": no requeue.
    Inside a container, Slurm's tools may be absent: submitit still writes the checkpoint, then
    the process exits with REQUEUE_EXIT_CODE and containers/run.sh requeues from the host.

    Only rank 0 of a multi-task job requeues; submitit's handler returns on the others. They wait
    here for the requeue (or rank 0's exit, under --kill-on-bad-exit) to end the step: leaving
    first with an error would make srun end rank 0, and with it the job, before it requeued.
    """
    if signum == signal.SIGUSR2 and in_slurm():
        if in_container():
            from jobs.submitit_internals import requeue_from_outside
            from worldmodels.preemption import REQUEUE_EXIT_CODE

            requeue_from_outside(REQUEUE_EXIT_CODE)
        os.kill(os.getpid(), signal.SIGUSR2)  # rank 0 does not come back from this
        if global_rank() != 0:
            time.sleep(RANK_WAITS_S)
