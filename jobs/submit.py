"""`python -m worldmodels submit STAGE|pipeline --config C --run-dir D --profile P [--from BASE] [--dry-run]`,
and the Slurm side of `sweep --executor slurm`.

Each stage becomes what its record says (worldmodels.stages): an array of tasks owning disjoint
episodes (chunked below the cluster's MaxArraySize), one job of nodes x tasks MPI ranks under
`srun --mpi=pmix`, or one plain job. Jobs ask Slurm to requeue them; SIGUSR2 before a preemption or
the time limit makes the stage save and requeue itself (see jobs/entries.py). `pipeline` submits
every stage at once, each depending (afterok) on the one before, and with `rounds.count` > 1 every
round from `--round R` on, a later round's stages also waiting for the stages of the round before
that they read (worldmodels.rounds.WAITS_FOR_PREVIOUS). A branch (`--from BASE`) submits
only the stages it does not reuse. A sweep submits one array per stage across all the points that
need it, chained the same way. Run directories and their stage records are written before anything
is submitted, and the job ids are kept in RUN_DIR/slurm/jobs.json for `status`. With a container
image, each job's python is the image's, started by containers/run.sh with the run directory bound
read-write and the runs it reuses from bound read-only.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from jobs import mpi_start
from jobs.entries import StageJob
from jobs.profile import Profile, Resources, check_against_cluster, cluster_info
from jobs.status import not_over
from jobs.submitit_internals import SbatchRefused, sbatch_script
from worldmodels import config as config_lib
from worldmodels import identity
from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.stages import STAGES, check_config

RUN_IN_CONTAINER = Path(__file__).resolve().parent.parent / "containers" / "run.sh"


def array_size(stage: str, cfg: Config, res: Resources) -> int:
    """How many tasks one run's share of a stage is split into (1 for stages that do not split)."""
    return max(1, min(res.array_tasks, STAGES[stage].units(cfg))) if STAGES[stage].tasks else 1


def container_python(image: str, writable: Path, readonly: list[Path] = ()) -> str:
    """The python command of a job that runs inside `image` (an Apptainer .sif or an image name)."""
    if image.endswith(".sif"):
        image = str(Path(image).absolute())
    binds = [arg for path in readonly for arg in ("--bind-ro", str(path))]
    return shlex.join([str(RUN_IN_CONTAINER), "--bind", str(writable), *binds, image, "python"])


def check_container(image: str) -> None:
    if not RUN_IN_CONTAINER.is_file():
        raise ConfigError(f"a container needs {RUN_IN_CONTAINER.relative_to(RUN_IN_CONTAINER.parents[1])} "
                          "from a checkout of this project; submit from the checkout")
    if image.endswith(".sif") and not Path(image).is_file():
        raise ConfigError(f"container: no Apptainer image at {image} (make container-apptainer builds it)")


def make_executor(stage: str, res: Resources, folder: Path, dependency: str | None, tasks: int,
                  container: str | None = None, readonly: list[Path] = (), writable: Path | None = None) -> submitit.AutoExecutor:
    """An executor for `stage`'s jobs, logging into FOLDER/slurm/JOBID; in a container, `writable`
    (default FOLDER) is bound read-write and `readonly` read-only."""
    image = container or res.container
    python = {"slurm_python": container_python(image, writable or folder, readonly)} if image else {}
    executor = submitit.AutoExecutor(folder=folder / "slurm" / "%j", cluster="slurm", **python)
    extra: dict[str, Any] = {"requeue": True}
    extra.update(dict(item.split("=", 1) for item in res.extra_sbatch))
    if dependency:
        extra["dependency"] = dependency
    params: dict[str, Any] = {
        "name": f"wm-{stage}", "timeout_min": res.time_min, "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
        "nodes": res.nodes, "tasks_per_node": res.tasks_per_node, "slurm_setup": list(res.setup),
        "slurm_additional_parameters": extra, "slurm_array_parallelism": min(res.array_parallelism, tasks),
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    for key in ("partition", "account", "qos"):
        if getattr(res, key):
            params[f"slurm_{key}"] = getattr(res, key)
    if STAGES[stage].mpi:
        # every task is an MPI rank; a rank that dies takes the job down with it
        params["slurm_srun_args"] = ["--mpi=pmix", "--kill-on-bad-exit=1"]
        params["slurm_teardown"] = mpi_start.batch_script_lines(str(folder / "slurm" / "%j"))  # a failed start: again
    executor.update_parameters(**params)
    return executor


def check_inputs(stage: str, run: RunDir, cfg: Config, decided: dict[str, dict] | None = None) -> None:
    """A stage submitted without a dependency needs the stages it reads from done already
    (`decided`: the stage records identity.decide gave, not written yet)."""
    from worldmodels.status import run_status

    missing = identity.unfinished_input(run, stage, cfg, decided)
    if missing is not None:
        needed, owner = missing
        state = run_status(owner.path)["stages"][needed]["state"] if owner.config_file.is_file() else "pending"
        raise DataError(f"{stage} needs {needed} done first ({needed} is {state} in {owner.path}); "
                        f"submit {needed} first, or everything with `submit pipeline`")


def reused_from(run: RunDir, cfg: Config) -> list[Path]:
    """The other run directories this run reads from (bound read-only in containers): those it reuses
    stages from and, in a later round of iterative training, those its earlier rounds reuse stages from
    (the rounds themselves lie inside round 0's directory, which a round's jobs bind whole)."""
    from worldmodels.rounds import rounds_so_far

    rounds = [r for r, _ in rounds_so_far(run, cfg)]
    return sorted({r.owner(stage).path for r in rounds for stage in STAGES} - {r.path for r in rounds})


def check_resources(stages: list[str], profile: Profile, container: str | None, info) -> None:
    for stage in stages:
        res = profile.for_stage(stage)
        if info is not None:
            check_against_cluster(res, stage, info)
        image = container or res.container  # as make_executor chooses
        if image:
            check_container(image)


def submit(cfg: Config, run_dir: Path, stages: list[str], profile: Profile, dry_run: bool = False,
           container: str | None = None, base: Path | None = None, out=sys.stdout) -> dict[str, list[str]]:
    """Submit `stages` of the run in `run_dir` in order, each after the one before (afterok), but for
    those it reuses or has finished; returns their job ids."""
    return _submit_runs([(cfg, run_dir, base)], stages, profile, dry_run, container, out)[0]


def submit_rounds(cfg: Config, root: Path, profile: Profile, dry_run: bool = False, container: str | None = None,
                  base: Path | None = None, out=sys.stdout) -> list[dict[str, list[str]]]:
    """`submit pipeline`: every stage of round `cfg.rounds.index` and of each round after it, in the
    run directory `root` (round 0's; `base`: BASE's round 0); returns the job ids of each round."""
    from worldmodels.rounds import round_base, round_config, round_path

    rounds = [(round_config(cfg, k), round_path(root, k), round_base(base, k)) for k in range(cfg.rounds.index, cfg.rounds.count)]
    return _submit_runs(rounds, list(STAGES), profile, dry_run, container, out)


def _submit_runs(runs: list[tuple[Config, Path, Path | None]], stages: list[str], profile: Profile, dry_run: bool,
                 container: str | None, out) -> list[dict[str, list[str]]]:
    """Submit `stages` of each of `runs` (config, run directory, base: consecutive rounds of one run).
    Every run is opened (its identities checked and recorded) before the first job is submitted, so a
    refusal submits nothing. In a run, each stage waits for the one before; in a later round, a stage
    that reads the round before (worldmodels.rounds.WAITS_FOR_PREVIOUS) also waits for that stage there."""
    from worldmodels.rounds import WAITS_FOR_PREVIOUS, first_round, previous

    runs = [(cfg, run_dir.resolve() if run_dir.is_absolute() else Path.cwd() / run_dir, base) for cfg, run_dir, base in runs]

    def heading(cfg: Config) -> None:
        if len(runs) > 1:
            print(f"round {cfg.rounds.index}:", file=out)

    def waits(i: int, stage: str, before: list[str], submitted: list[dict[str, list[str]]]) -> str | None:
        ids = before + (submitted[i - 1].get(WAITS_FOR_PREVIOUS[stage], []) if i and stage in WAITS_FOR_PREVIOUS else [])
        return afterok(ids) if ids else None

    if dry_run:  # every stage of every run, as if none had begun; job ids named <round stage>
        names: list[dict[str, list[str]]] = []
        for i, (cfg, run_dir, _) in enumerate(runs):
            heading(cfg)
            names.append({stage: [f"<round {cfg.rounds.index} {stage}>"] for stage in stages})
            before: list[str] = []
            for stage in stages:
                res, tasks = profile.for_stage(stage), array_size(stage, cfg, profile.for_stage(stage))
                executor = make_executor(stage, res, run_dir, waits(i, stage, before, names), tasks, container,
                                         writable=first_round(RunDir(run_dir), cfg))
                print(f"# --- {stage} ---", file=out)
                print(sbatch_script(executor, tasks), file=out)
                before = [f"<{stage}>"]
        return [{} for _ in runs]
    first_cfg, first_dir, _ = runs[0]
    if first_cfg.rounds.index:
        previous(RunDir(first_dir), first_cfg)  # refused now, not when the job starts
    info = cluster_info()
    check_resources(stages, profile, container, info)
    accepted = [(cfg, run_dir, base, *_accept(cfg, run_dir, stages, base)) for cfg, run_dir, base in runs]
    for _, run_dir, *_ in accepted:  # every round's folder can be written before any gets its records
        identity.writable(Path(run_dir))
    opened = [(cfg, identity.begin(cfg, run_dir, stages[-1], base), todo, notes)
              for cfg, run_dir, base, todo, notes in accepted]
    submitted: list[dict[str, list[str]]] = []
    for i, (cfg, run, todo, notes) in enumerate(opened):
        heading(cfg)
        for note in notes:
            print(note, file=out)
        writable = first_round(run, cfg)  # a later round's jobs read the rounds before it
        ids_of: dict[str, list[str]] = {}
        before: list[str] = []
        for stage in todo:
            res = profile.for_stage(stage)
            tasks = array_size(stage, cfg, res)
            job_args = [(config_lib.to_dict(cfg), str(run.path), task, tasks) for task in range(tasks)]
            ids = _submit(stage, res, run.path, waits(i, stage, before, submitted), job_args, info, container,
                          reused_from(run, cfg), writable)
            ids_of[stage] = before = ids
            record(run, stage, ids)
            print(f"{stage}: submitted {', '.join(ids)}", file=out)
        submitted.append(ids_of)
    return submitted


def _accept(cfg: Config, run_dir: Path, stages: list[str], base: Path | None) -> tuple[list[str], list[str]]:
    """The stages of `stages` to submit in `run_dir` (those it runs itself and has not finished) and a
    line for each other one, or the clear error a start would give; writes nothing, so that a refused
    submit leaves no run directory behind."""
    check_config(stages[-1], cfg)
    decided, run = identity.decide(cfg, run_dir, stages[-1], base), RunDir(run_dir)
    owners = {stage: run.owner(stage, decided.get(stage)) for stage in stages}
    own = [stage for stage in stages if owners[stage] is run]
    todo = [stage for stage in own if not identity.finished(run, stage, cfg)]
    notes = [f"{stage}: reused from {owners[stage].path}" for stage in stages if stage not in own]
    notes += [f"{stage}: finished already, not submitted" for stage in own if stage not in todo]
    if todo:  # its first stage waits for no job submitted here: what that reads must be done
        check_inputs(todo[0], run, cfg, decided)
        check_not_queued(run, todo)
    return todo, notes


def check_not_queued(run: RunDir, stages: list[str]) -> None:
    """Refuse to submit again a stage whose jobs Slurm still has: the copy would only be refused by
    the stage's lease when it starts, and the jobs after it would wait on it for ever."""
    submitted = json.loads(run.jobs_file.read_text()) if run.jobs_file.is_file() else {}
    ids = {stage: submitted.get(stage, {}).get("ids", []) for stage in stages}
    queued = not_over([i for stage in stages for i in ids[stage]])  # one look at the queue for all of them
    for stage in stages:
        arrays = {i.split("_")[0] for i in ids[stage]}
        live = {job: state for job, state in queued.items() if job.split("_")[0] in arrays}
        if live:
            jobs = ", ".join(f"{job} {state}" for job, state in list(live.items())[:4]) + (", ..." if len(live) > 4 else "")
            raise ConfigError(f"{stage} of {run.path} was submitted already and its jobs are not over ({jobs}): "
                              "wait for them, or scancel them to submit it again")


def submit_sweep(sweep, profile: Profile, container: str | None = None, out=sys.stdout) -> dict[str, list[str]]:
    """One array job per stage across every point of `sweep` that runs the stage itself, each stage
    after the previous one (afterok); the points' reused stages are not submitted."""
    configs = {p.name: sweep.config_of(p) for p in sweep.points}
    several = sorted({cfg.rounds.count for cfg in configs.values()} - {1})
    if several:
        raise ConfigError(f"a sweep of {several[0]} rounds of iterative training runs locally (sweep --executor local), "
                          "or as one run per point, each submitted with all its rounds (submit pipeline)")
    info = cluster_info()
    check_resources(list(STAGES), profile, container, info)
    todos = {p.name: _accept(configs[p.name], p.run_dir, list(STAGES), sweep.base)[0] for p in sweep.points}
    for p in sweep.points:  # every point accepted before any is written: a refused sweep leaves nothing behind
        identity.writable(p.run_dir)
    sweep.save()
    runs = {p.name: identity.begin(configs[p.name], p.run_dir, list(STAGES)[-1], sweep.base) for p in sweep.points}
    readonly = sorted({path for name, run in runs.items() for path in reused_from(run, configs[name])})
    submitted: dict[str, list[str]] = {}
    dependency = None
    for stage in STAGES:
        res = profile.for_stage(stage)
        todo = [p for p in sweep.points if stage in todos[p.name]]
        if not todo:
            print(f"{stage}: nothing to submit (every point reuses or has finished it)", file=out)
            continue
        job_args, owners = [], []
        for p in todo:
            tasks = array_size(stage, configs[p.name], res)
            job_args += [(config_lib.to_dict(configs[p.name]), str(p.run_dir.resolve()), t, tasks) for t in range(tasks)]
            owners += [p.name] * tasks
        ids = _submit(stage, res, sweep.directory.resolve(), dependency, job_args, info, container, readonly)
        for p in todo:
            record(runs[p.name], stage, [i for i, owner in zip(ids, owners) if owner == p.name])
        submitted[stage] = ids
        print(f"{stage}: submitted {len(ids)} tasks for {len(todo)} points: {', '.join(ids)}", file=out)
        dependency = afterok(ids)
    return submitted


def _submit(stage: str, res: Resources, folder: Path, dependency: str | None, job_args: list[tuple], info,
            container: str | None, readonly: list[Path], writable: Path | None = None) -> list[str]:
    """Submit one job per element of `job_args` (config, run_dir, task, num_tasks) as arrays no larger
    than the cluster allows; returns the job ids in the same order."""
    job = StageJob(stage)
    chunk = max(1, (info.max_array_size if info else 1001) - 1)
    ids: list[str] = []
    for first in range(0, len(job_args), chunk):
        part = job_args[first:first + chunk]
        executor = make_executor(stage, res, folder, dependency, len(part), container, readonly, writable)
        printed, refused = io.StringIO(), False  # submitit prints sbatch's stderr before raising
        try:
            with contextlib.redirect_stderr(printed):
                ids += [j.job_id for j in executor.map_array(job, *(list(column) for column in zip(*part)))]
        except SbatchRefused as exc:  # sbatch said no: an account, QOS or limit of the profile
            refused = True  # the one line below says what sbatch printed
            said = (str(exc).strip().splitlines() or ["no reason given"])[-1].removeprefix("sbatch: error: ")
            raise ConfigError(f"sbatch refused {stage}'s jobs ({said}); any stage submitted before it stays queued "
                              "(see `status`): scancel it, fix the profile, and submit again") from None
        finally:
            if not refused:
                sys.stderr.write(printed.getvalue())
    return ids


def afterok(ids: list[str]) -> str:
    """A dependency on every job (every array) of `ids` ending well."""
    return "afterok:" + ":".join(sorted({i.split("_")[0] for i in ids}))


def record(run: RunDir, stage: str, ids: list[str]) -> None:
    path = run.jobs_file
    jobs = json.loads(path.read_text()) if path.is_file() else {}
    jobs[stage] = {"ids": ids, "submitted": time.time()}
    atomic_write(path, json.dumps(jobs, indent=1).encode())


def stages_for(name: str) -> list[str]:
    """[name] for a stage name (`pipeline` goes to submit_rounds)."""
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}' (stages: {', '.join(STAGES)}, or pipeline)")
    return [name]
