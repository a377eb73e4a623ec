"""`python -m worldmodels submit STAGE|pipeline --config C --run-dir D --profile P [--dry-run]`.

Each stage becomes one submitit job (the controller: nodes x tasks MPI ranks under
`srun --mpi=pmix`) or an array of tasks owning disjoint episodes (collect, encode, evaluate),
chunked below the cluster's MaxArraySize. Jobs ask Slurm to requeue them; SIGUSR2 before a
preemption or the time limit makes the stage save and requeue itself (see jobs/entries.py).
`pipeline` submits every stage at once, each depending (afterok) on the one before. The run
directory and its config are created before anything is submitted, and the job ids are kept in
RUN_DIR/slurm/jobs.json for `status`. With a container image, each job's python is the image's,
started by containers/run.sh with the run directory bound (see there for requeue).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from jobs.entries import StageJob
from jobs.profile import Profile, Resources, check_against_cluster, cluster_info
from worldmodels import config as config_lib
from worldmodels import rundir
from worldmodels.config import Config
from worldmodels.errors import ConfigError, DataError
from worldmodels.stages import STAGES, TASK_STAGES

RUN_IN_CONTAINER = Path(__file__).resolve().parent.parent / "containers" / "run.sh"
UPSTREAM = {"train-vae": "collect", "encode": "train-vae", "train-mdnrnn": "encode", "train-controller": "train-mdnrnn",
            "evaluate": "train-controller", "report": "evaluate"}


def array_size(stage: str, cfg: Config, res: Resources) -> int:
    episodes = cfg.evaluate.episodes if stage == "evaluate" else cfg.collect.episodes
    return max(1, min(res.array_tasks, episodes))


def container_python(image: str, run_dir: Path) -> str:
    """The python command of a job that runs inside `image` (an Apptainer .sif or an image name)."""
    if image.endswith(".sif"):
        image = str(Path(image).absolute())
    return shlex.join([str(RUN_IN_CONTAINER), "--bind", str(run_dir), image, "python"])


def check_container(image: str) -> None:
    if not RUN_IN_CONTAINER.is_file():
        raise ConfigError(f"a container needs {RUN_IN_CONTAINER.relative_to(RUN_IN_CONTAINER.parents[1])} "
                          "from a checkout of this project; submit from the checkout")
    if image.endswith(".sif") and not Path(image).is_file():
        raise ConfigError(f"container: no Apptainer image at {image} (make container-apptainer builds it)")


def make_executor(stage: str, res: Resources, run_dir: Path, dependency: str | None, tasks: int,
                  container: str | None = None) -> submitit.AutoExecutor:
    image = container or res.container
    python = {"slurm_python": container_python(image, run_dir)} if image else {}
    executor = submitit.AutoExecutor(folder=run_dir / "slurm" / "%j", cluster="slurm", **python)
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
    if stage == "train-controller":
        # every task is an MPI rank; a rank that dies takes the job down with it
        params["slurm_srun_args"] = ["--mpi=pmix", "--kill-on-bad-exit=1"]
    executor.update_parameters(**params)
    return executor


def check_inputs(stage: str, run_dir: Path) -> None:
    """A stage submitted without a dependency needs its upstream stage done already."""
    from worldmodels.status import run_status

    upstream = UPSTREAM.get(stage)
    if upstream is None:
        return
    state = "pending"
    if (run_dir / rundir.CONFIG_FILE).is_file():
        state = run_status(run_dir)["stages"][upstream]["state"]
    if state != "done":
        raise DataError(f"{stage} needs {upstream} done first ({upstream} is {state} in {run_dir}); "
                        f"submit {upstream} first, or everything with `submit pipeline`")


def render(stage: str, res: Resources, run_dir: Path, dependency: str | None, tasks: int,
           container: str | None = None) -> str:
    """The sbatch script submitit would submit for this stage (for --dry-run and review)."""
    executor = make_executor(stage, res, run_dir, dependency, tasks, container)
    slurm = executor._executor
    if stage in TASK_STAGES and tasks > 1:
        slurm.parameters["map_count"] = tasks  # what map_array sets before rendering an array
    return slurm._make_submission_file_text(slurm._submitit_command_str, "DRYRUN")


def submit(cfg: Config, run_dir: Path, stages: list[str], profile: Profile, dry_run: bool = False,
           container: str | None = None, out=sys.stdout) -> dict[str, list[str]]:
    """Submit `stages` in order, each after the previous one (afterok); returns their job ids."""
    run_dir = run_dir.resolve() if run_dir.is_absolute() else (Path.cwd() / run_dir)
    info = None if dry_run else cluster_info()
    for stage in stages:
        res = profile.for_stage(stage)
        if info is not None:
            check_against_cluster(res, stage, info)
        image = container or res.container  # as make_executor chooses
        if image and not dry_run:
            check_container(image)
    if not dry_run:
        check_inputs(stages[0], run_dir)
        rundir.prepare(run_dir, cfg)
    max_array = info.max_array_size if info else 1001
    submitted: dict[str, list[str]] = {}
    dependency = None
    for stage in stages:
        res = profile.for_stage(stage)
        tasks = array_size(stage, cfg, res) if stage in TASK_STAGES else 1
        if dry_run:
            print(f"# --- {stage} ---", file=out)
            print(render(stage, res, run_dir, dependency, tasks, container), file=out)
            dependency = f"afterok:<{stage}>"
            continue
        job = StageJob(stage, config_lib.to_dict(cfg), str(run_dir))
        ids: list[str] = []
        if stage in TASK_STAGES:
            # arrays larger than MaxArraySize go in several submissions of whole chunks
            chunk = max(1, max_array - 1)
            for first in range(0, tasks, chunk):
                part = range(first, min(first + chunk, tasks))
                executor = make_executor(stage, res, run_dir, dependency, len(part), container)
                jobs = executor.map_array(job, list(part), [tasks] * len(part))
                ids += [j.job_id for j in jobs]
        else:
            ids.append(make_executor(stage, res, run_dir, dependency, 1, container).submit(job).job_id)
        submitted[stage] = ids
        record(run_dir, stage, ids)
        print(f"{stage}: submitted {', '.join(ids)}", file=out)
        dependency = "afterok:" + ":".join(sorted({i.split("_")[0] for i in ids}))
    return submitted


def record(run_dir: Path, stage: str, ids: list[str]) -> None:
    path = run_dir / "slurm" / "jobs.json"
    jobs = json.loads(path.read_text()) if path.is_file() else {}
    jobs[stage] = {"ids": ids, "submitted": time.time()}
    rundir.atomic_write(path, json.dumps(jobs, indent=1).encode())


def stages_for(name: str) -> list[str]:
    if name == "pipeline":
        return list(STAGES)
    if name not in STAGES:
        raise ConfigError(f"unknown stage '{name}' (stages: {', '.join(STAGES)}, or pipeline)")
    return [name]
