"""Running a stage: the one call behind every stage name, from the CLI, a Slurm job or a sweep.

Its config is checked first, and its identity (worldmodels.identity: checked against the run's
records, reused from a base run where a branch allows): nothing is written for a config that cannot
run. Then the stage's lease is taken (worldmodels.lease), and only under it is the identity
recorded and the stage's function run, unless the stage is reused, in which case there is nothing
to do: a second copy, refused, changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Iterator

from worldmodels import identity, lease
from worldmodels.config import Config
from worldmodels.errors import DataError, explain_storage
from worldmodels.rundir import RunDir
from worldmodels.stages import STAGES, check_config

log = logging.getLogger("worldmodels")


def run_stage(name: str, cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1,
              base: str | Path | None = None, restart: bool = False, job: str | None = None) -> str:
    """Run one stage (one task of it for task stages) in-process, after checking its identity (and
    branching from `base`); returns a line for people (empty on MPI ranks that only serve the master).
    `restart` (training stages) sets the stage's checkpoints aside first, so it trains from the start.
    The stage (task) holds its lease while it runs (worldmodels.lease; `job`: the Slurm job, named
    to whoever finds it held), so a second copy is refused instead of writing the same files."""
    stage = STAGES[name]
    if stage.tasks:
        from worldmodels.distributed import check_task

        check_task(task, num_tasks)
    check_config(name, cfg)
    if cfg.rounds.index:  # a later round needs the round before it trained (worldmodels.rounds)
        from worldmodels.rounds import previous

        previous(RunDir(run_dir), cfg)
    decided = identity.decide(cfg, run_dir, name, base)  # nothing is written for a config or base that cannot run,
    _check_inputs(cfg, RunDir(run_dir), name, decided)  # nor for a stage whose inputs are not made (a mistyped run dir)
    run = identity.writable(Path(run_dir))
    part = task if stage.tasks and num_tasks > 1 else None
    held = lease.lease_file(run.path, name, part)
    try:
        with _lease(held, name, part, job, identity.digest(identity.identity(cfg, name))), _one_blas_thread():
            # recorded under the lease: a copy refused because the stage is running changes nothing
            run = identity.begin(cfg, run.path, name, base, held)
            if run.owner(name) is not run:
                return f"{name}: reused from {run.owner(name).path} (finished there with the same identity)"
            if restart:
                _set_checkpoints_aside(run, name)
            if stage.tasks:
                return stage.function()(cfg, run.path, task, num_tasks)
            return stage.function()(cfg, run.path)
    except OSError as exc:  # a full, read-only or vanished file system: one line, not a traceback
        explained = explain_storage(exc, run.path)
        if explained is None:
            raise
        raise explained from None


def _check_inputs(cfg: Config, run: RunDir, name: str, decided: dict[str, dict]) -> None:
    """A stage reads what the stages before it finished (here or where the branch reuses them from)."""
    missing = identity.unfinished_input(run, name, cfg, decided)
    if missing is not None:
        needed, owner = missing
        raise DataError(f"{needed} is not finished in {owner.path}, and {name} reads what it makes: run {needed} "
                        f"first (or check the run directory)")


def _one_blas_thread():
    """numpy's (and OpenCV's) BLAS on one thread while a stage runs; torch keeps its own threads.

    - CMA-ES's linear algebra then makes the same sums under every launcher (1 process, MPI ranks).
    - A stage's only other BLAS work is small: the frame resize is two small products per frame
      (worldmodels.resize). BLAS threads spinning beside torch's made a one-process evaluate 3
      times slower on 2 cores (70 s against 23 s). Processes started with OMP_NUM_THREADS=1 (the
      demo's tasks and ranks) had one BLAS thread already: OpenBLAS reads that variable too.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


@contextlib.contextmanager
def _lease(path: Path, name: str, task: int | None, job: str | None, ident: str) -> Iterator[None]:
    """The stage's lease, held by the master for all MPI ranks; every rank stops if it is refused."""
    from worldmodels.distributed import world

    group = world()
    with contextlib.ExitStack() as stack:
        refused = None
        if group.rank == 0:
            try:
                stack.enter_context(lease.hold(path, name if task is None else f"{name}[task {task}]", job, ident))
            except DataError as exc:
                refused = str(exc)
        refused = group.bcast(refused)
        if refused is not None:
            raise DataError(refused)
        yield


def _set_checkpoints_aside(run: RunDir, name: str) -> None:
    """Move a training stage's checkpoints out of its way (kept, not deleted: a restart must not lose
    anything by mistake); under MPI the master moves them while the other ranks wait."""
    from worldmodels.distributed import world

    group = world()
    directory = run.checkpoints(name)
    if group.rank == 0 and directory.exists():
        aside = directory.with_name(f"{directory.name}.before-restart-{time.strftime('%Y%m%d-%H%M%S')}")
        directory.rename(aside)
        log.info("%s: restarting; its checkpoints are now in %s", name, aside)
    group.barrier()
