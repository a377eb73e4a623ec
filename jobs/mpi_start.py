"""A job whose rank died while MPI started is requeued, a few times at most.

Starting MPI under `srun --mpi=pmix` is not certain: PMIx's client sometimes crashes inside
MPI_Init (about once in 90 launches here with its shared-memory store, rarer with its hash store,
never zero on clusters either). Such a rank has run nothing of the stage, so trying the job again
is safe; it is not a preemption, and submitit would report the job failed.

Each rank marks its start in the job's log folder (`mpi-start.RESTART.RANK`) and removes the mark
once every rank has met every other. The job's batch script, after srun, looks for marks left by
this attempt: if srun failed with one left, it requeues the job, unless MPI failed to start on
MAX_FAILED_STARTS attempts already (the marks of those stay), which means a broken set-up rather
than bad luck: then the job fails as it would have.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from jobs import slurm_env

MAX_FAILED_STARTS = 3
MARK = "mpi-start"


def mark(folder: Path, restart: int, rank: int) -> Path:
    """Where rank `rank` of attempt `restart` marks its start."""
    return folder / f"{MARK}.{restart}.{rank}"


def start(folder: Path) -> None:
    """Start MPI in this rank of a job logging into `folder`, marked until every rank is up."""
    started = mark(folder, slurm_env.restart_count(), slurm_env.global_rank())
    started.touch()
    from mpi4py import MPI  # MPI_Init

    MPI.COMM_WORLD.Barrier()
    started.unlink()


def batch_script_lines(folder_pattern: str) -> list[str]:
    """What the batch script runs after srun (submitit's `teardown`). `folder_pattern`: the job's
    log folder with submitit's `%j` for the job id, which in an array is ARRAY_TASK as submitit's
    JobEnvironment.job_id says (a sweep's points). They come first after srun: `$?` is srun's."""
    before, after = folder_pattern.split("%j")
    folder = shlex.quote(before) + '"$job"' + (shlex.quote(after) if after else "")
    return [
        "status=$?",
        'job=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID}',
        'job=${job:-$SLURM_JOB_ID}',
        f"folder={folder}",
        f'if [ $status -ne 0 ] && compgen -G "$folder/{MARK}.${{SLURM_RESTART_COUNT:-0}}.*" >/dev/null; then',
        f'  failed=$(cd "$folder" && ls {MARK}.* | cut -d. -f2 | sort -u | wc -l)',
        f"  if [ $failed -lt {MAX_FAILED_STARTS} ]; then",
        f'    echo "a rank died while MPI started ($failed time(s), at most {MAX_FAILED_STARTS}): requeueing job $job" >&2',
        '    scontrol requeue "$job"',
        "  else",
        f'    echo "MPI failed to start {MAX_FAILED_STARTS} times in job $job: not requeueing it; see the ranks\' errors above" >&2',
        "  fi",
        "fi",
        "exit $status",
    ]


def job_folder() -> Path:
    """This job's log folder, as submitit names it."""
    import submitit

    return Path(submitit.JobEnvironment().paths.folder)

