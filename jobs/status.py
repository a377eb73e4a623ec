"""What Slurm says about a run's submitted jobs: ids per stage, and for each job its attempts.

Accounting (`sacct -D`) is read where the cluster has it: every attempt of a job (a requeue after
a preemption or a node failure starts a new one) with its state, exit code, elapsed time, peak
memory and nodes. Without accounting, or for a job accounting does not know (yet: sacct lags the
scheduler by a second or two), `scontrol show job` gives the current state and the restart
count, for as long as slurmctld keeps the job (MinJobAge).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from worldmodels.rundir import RunDir

SACCT_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "MaxRSS", "NodeList", "Start", "End")


def _run(command: list[str]) -> str | None:
    """The command's output, or None when it fails (no accounting, no Slurm on this machine)."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _kib(text: str) -> int:
    """sacct's MaxRSS ("123456K", "2.5G", "") in KiB."""
    match = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    if not match:
        return 0
    return int(float(match.group(1)) * 1024 ** "KMGT".index(match.group(2) or "K"))


def sacct_attempts(ids: list[str]) -> dict[str, list[dict[str, Any]]] | None:
    """{job id: [attempt, ...]} from accounting, oldest attempt first; None without accounting.

    `sacct -D` prints one line per attempt of a job (its allocation), each followed by its steps'
    lines (JOBID.batch, JOBID.0, ...); the peak memory of an attempt is the largest of its steps'.
    """
    if not ids:
        return {}
    text = _run(["sacct", "-D", "-P", "-n", "-j", ",".join(ids), "-o", ",".join(SACCT_FIELDS)])
    if text is None:
        return None
    attempts: dict[str, list[dict[str, Any]]] = {}
    current = None
    for line in text.splitlines():
        fields = dict(zip(SACCT_FIELDS, line.split("|")))
        if len(fields) != len(SACCT_FIELDS):
            continue
        job, _, step = fields["JobID"].partition(".")
        if not step:
            current = {"state": fields["State"].split()[0], "exit_code": fields["ExitCode"],
                       "elapsed": fields["Elapsed"], "max_rss_mb": 0.0, "nodes": fields["NodeList"],
                       "start": fields["Start"], "end": fields["End"]}
            attempts.setdefault(job, []).append(current)
        elif current is not None:
            current["max_rss_mb"] = max(current["max_rss_mb"], round(_kib(fields["MaxRSS"]) / 1024, 1))
    return attempts


def scontrol_state(job_id: str) -> dict[str, Any]:
    """State and restart count of a job slurmctld still knows (`scontrol show job`, no accounting)."""
    text = _run(["scontrol", "show", "job", "-o", job_id]) or ""
    state = re.search(r"JobState=(\S+)", text)
    restarts = re.search(r"Restarts=(\d+)", text)
    return {"id": job_id, "state": state.group(1) if state else "UNKNOWN (finished long ago or not visible)",
            "restarts": int(restarts.group(1)) if restarts else None}


def job_states(ids: list[str]) -> list[dict[str, Any]]:
    """Each job's state and restarts; with accounting also its attempts (see the module's docstring)."""
    accounted = sacct_attempts(ids) or {}
    out = []
    for job_id in ids:
        attempts = accounted.get(job_id)
        if attempts:
            out.append({"id": job_id, "state": attempts[-1]["state"], "restarts": len(attempts) - 1,
                        "attempts": attempts, "source": "sacct"})
        else:
            out.append({**scontrol_state(job_id), "source": "scontrol"})
    return out


# the states of a job that will not run (again) by itself; any other (pending, running, held,
# suspended, requeued) is work Slurm still has
OVER = {"COMPLETED", "COMPLETING", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
        "DEADLINE", "OUT_OF_MEMORY", "REVOKED"}


def not_over(ids: list[str]) -> dict[str, str]:
    """{job id: state} of the jobs of `ids` (whole arrays: `123` stands for `123_0`, `123_[1-3]`...)
    that Slurm still has to run or is running; {} where squeue cannot say."""
    arrays = {i.split("_")[0] for i in ids}
    if not arrays:
        return {}
    # every job listed, filtered here: `squeue -j` fails outright on an id slurmctld has forgotten
    text = _run(["squeue", "-h", "-t", "all", "-o", "%F|%i|%T"]) or ""
    out = {}
    for line in text.splitlines():
        array, job, state = (line.split("|") + ["", ""])[:3]
        if array in arrays and state not in OVER:
            out[job] = state
    return out


def slurm_view(run_dir: str | Path) -> dict[str, Any]:
    """{stage: {"jobs": [{"id", "state", "restarts", "source", ["attempts"]}]}} for every stage
    submitted for run_dir."""
    path = RunDir(run_dir).jobs_file
    if not path.is_file():
        return {}
    return {stage: {"jobs": job_states(entry["ids"])} for stage, entry in json.loads(path.read_text()).items()}
