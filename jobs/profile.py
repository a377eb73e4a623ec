"""Where to run: a Slurm profile (YAML in slurm/profiles/), separate from what to run (the config).

A profile gives default resources and per-stage overrides (the training stages want a GPU, the
controller wants nodes x tasks). It is checked before anything is submitted: unknown keys,
values that are not plain Slurm words, impossible shapes, and, when the cluster can be asked,
partitions that do not exist and requests larger than a node.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from worldmodels.config import _build
from worldmodels.errors import ConfigError
from worldmodels.stages import STAGES

_WORD = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]*$")  # what a #SBATCH value may hold: no spaces, quotes or shell


@dataclass(frozen=True)
class Resources:
    """What one job of a stage asks for."""

    partition: str = ""  # "" = the cluster's default partition
    account: str = ""
    qos: str = ""
    time_min: int = 60  # time limit; on reaching it the job checkpoints and requeues itself
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    gpus_per_node: int = 0
    nodes: int = 1  # train-controller: MPI ranks = nodes x tasks_per_node
    tasks_per_node: int = 1
    array_tasks: int = 1  # collect, encode, evaluate: how many array tasks share the episodes
    array_parallelism: int = 64  # array tasks running at once
    extra_sbatch: tuple[str, ...] = ()  # more #SBATCH options, each "key=value" (e.g. "constraint=a100")
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., source venv)
    container: str = ""  # an Apptainer .sif or Docker/Podman image to run the job inside ("" = none)


@dataclass(frozen=True)
class Profile:
    """A named set of Resources per stage: `default`, overridden key by key under `stages`."""

    name: str
    default: Resources
    stages: dict[str, Resources] = field(default_factory=dict)

    def for_stage(self, stage: str) -> Resources:
        return self.stages.get(stage, self.default)


def load_profile(path: str | Path) -> Profile:
    """Read and check a profile file (without asking the cluster)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"profile '{path}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"profile '{path}' must hold a mapping")
    unknown = set(data) - {"default", "stages"}
    if unknown:
        raise ConfigError(f"unknown profile key '{sorted(unknown)[0]}' in {path} (known: default, stages)")
    base = data.get("default") or {}
    default = _resources(base, "default")
    stages = {}
    for stage, overrides in (data.get("stages") or {}).items():
        if stage not in STAGES:
            raise ConfigError(f"unknown stage '{stage}' under 'stages' in {path} (known: {', '.join(STAGES)})")
        stages[stage] = _resources({**base, **(overrides or {})}, f"stages.{stage}")
    profile = Profile(path.stem, default, stages)
    for stage in STAGES:
        _check_shape(profile.for_stage(stage), stage)
    return profile


def _resources(data: dict[str, Any], prefix: str) -> Resources:
    try:
        res = _build(Resources, data, prefix=f"{prefix}.")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config key", "profile key")) from None
    for f in dataclasses.fields(Resources):
        value = getattr(res, f.name)
        for item in value if isinstance(value, tuple) else [value]:
            if isinstance(item, str) and f.name != "setup" and not _WORD.match(item):
                raise ConfigError(f"profile key '{prefix}.{f.name}' has characters Slurm options may not hold: {item!r}")
            if isinstance(item, str) and "\n" in item:
                raise ConfigError(f"profile key '{prefix}.{f.name}' must be one line")
    for item in res.extra_sbatch:
        if "=" not in item:
            raise ConfigError(f"profile key '{prefix}.extra_sbatch' entries must look like key=value, got {item!r}")
    return res


def _check_shape(res: Resources, stage: str) -> None:
    for key in ("time_min", "cpus_per_task", "nodes", "tasks_per_node", "array_tasks", "array_parallelism"):
        if getattr(res, key) < 1:
            raise ConfigError(f"profile: {stage} asks for {key}={getattr(res, key)}, which must be >= 1")
    if res.gpus_per_node < 0 or res.mem_gb <= 0:
        raise ConfigError(f"profile: {stage} asks for gpus_per_node={res.gpus_per_node}, mem_gb={res.mem_gb}")
    if not STAGES[stage].mpi and (res.nodes > 1 or res.tasks_per_node > 1):
        mpi = ", ".join(name for name, record in STAGES.items() if record.mpi)
        raise ConfigError(f"profile: only {mpi} runs on several nodes or tasks; {stage} asks for "
                          f"{res.nodes} nodes x {res.tasks_per_node} tasks")


# --- what the cluster can say ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    partitions: dict[str, dict[str, int]]  # name -> {"cpus": per node, "gpus": per node, "nodes": count}
    default_partition: str
    max_array_size: int


def cluster_info() -> ClusterInfo | None:
    """Partitions and limits from sinfo/scontrol; None where there is no reachable Slurm."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G|%D"], capture_output=True, text=True, timeout=20, check=True).stdout
        conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    partitions, default = {}, ""
    for line in out.splitlines():
        name, cpus, gres, nodes = line.split("|")
        if name.endswith("*"):
            name = default = name[:-1]
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        entry = partitions.setdefault(name, {"cpus": 0, "gpus": 0, "nodes": 0})
        entry["cpus"] = max(entry["cpus"], int(cpus.rstrip("+")))
        entry["gpus"] = max(entry["gpus"], gpus)
        entry["nodes"] += int(nodes)
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", conf, re.M)
    return ClusterInfo(partitions, default, int(match.group(1)) if match else 1001)


def check_against_cluster(res: Resources, stage: str, info: ClusterInfo) -> None:
    """Refuse what this cluster cannot run, before anything is submitted."""
    name = res.partition or info.default_partition
    if name not in info.partitions:
        raise ConfigError(f"profile: partition '{name}' for {stage} does not exist (partitions: {', '.join(sorted(info.partitions))})")
    part = info.partitions[name]
    if res.cpus_per_task * res.tasks_per_node > part["cpus"]:
        raise ConfigError(f"profile: {stage} asks for {res.cpus_per_task * res.tasks_per_node} CPUs per node; "
                          f"nodes of partition '{name}' have {part['cpus']}")
    if res.gpus_per_node > part["gpus"]:
        raise ConfigError(f"profile: {stage} asks for {res.gpus_per_node} GPUs per node; nodes of partition "
                          f"'{name}' have {part['gpus']}")
    if res.nodes > part["nodes"]:
        raise ConfigError(f"profile: {stage} asks for {res.nodes} nodes; partition '{name}' has {part['nodes']}")
