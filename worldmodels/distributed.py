"""How a stage's work is split: tasks owning disjoint episodes, and the process group a stage runs
in (MPI ranks when launched by mpirun/srun, else one process).

Only what CMA-ES needs: rank, size, hosts, broadcast, gather, barrier, abort, heartbeats. Under MPI these are
mpi4py's (Debian's OpenMPI; `srun --mpi=pmix` on Slurm); a plain `python -m worldmodels`
is a group of one and never initialises MPI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import Any

MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in MPI_LAUNCH_VARIABLES)


class Single:
    """The group of one process."""

    rank, size = 0, 1
    hosts = [socket.gethostname()]

    def bcast(self, value: Any) -> Any:
        return value

    def gather(self, value: Any) -> list[Any]:
        return [value]

    def barrier(self) -> None:
        pass

    def abort(self, code: int) -> None:
        sys.exit(code)

    def heartbeat(self, timeout_s: float, what: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class Mpi:
    """MPI.COMM_WORLD through mpi4py (pickle-based collectives: messages here are small)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self._comm = MPI.COMM_WORLD
        self.rank, self.size = self._comm.Get_rank(), self._comm.Get_size()
        self.hosts = self._comm.allgather(socket.gethostname())  # where each rank runs, for messages

    def bcast(self, value: Any) -> Any:
        return self._comm.bcast(value, root=0)

    def gather(self, value: Any) -> list[Any] | None:
        return self._comm.gather(value, root=0)

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int) -> None:
        # Ends every rank at once: a failed rank must never leave the others waiting forever.
        self._comm.Abort(code)

    def heartbeat(self, timeout_s: float, what: str) -> contextlib.AbstractContextManager:
        """While the block runs, a rank silent for `timeout_s` stops the job (worldmodels.heartbeat)."""
        from worldmodels.heartbeat import Heartbeat
        from worldmodels.preemption import REQUEUE_EXIT_CODE

        return Heartbeat(self._comm, timeout_s, what, self.hosts, REQUEUE_EXIT_CODE)


def world() -> Single | Mpi:
    return Mpi() if launched_by_mpi() else Single()


def task_episodes(episodes: int, task: int, num_tasks: int) -> range:
    """The episodes task `task` of `num_tasks` owns (strided, so tasks get similar amounts)."""
    check_task(task, num_tasks)
    return range(task, episodes, num_tasks)


def check_task(task: int, num_tasks: int) -> None:
    """A clear error unless task is one of 0..num_tasks-1."""
    from worldmodels.errors import ConfigError

    if num_tasks < 1:
        raise ConfigError(f"--num-tasks must be at least 1, got {num_tasks}")
    if not 0 <= task < num_tasks:
        raise ConfigError(f"task {task} is not one of 0..{num_tasks - 1}")


def share(items: int, rank: int, size: int) -> range:
    """The contiguous share of `items` work items that `rank` of `size` takes."""
    per, extra = divmod(items, size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (rank < extra))
