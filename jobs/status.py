"""What Slurm says about a run's submitted jobs: ids per stage, states, restarts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from worldmodels.rundir import RunDir


def job_states(ids: list[str]) -> list[dict[str, Any]]:
    """State and restart count of each job id (`scontrol show job`, which needs no accounting)."""
    out = []
    for job_id in ids:
        try:
            text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        state = re.search(r"JobState=(\S+)", text)
        restarts = re.search(r"Restarts=(\d+)", text)
        out.append({"id": job_id, "state": state.group(1) if state else "UNKNOWN (finished long ago or not visible)",
                    "restarts": int(restarts.group(1)) if restarts else None})
    return out


def slurm_view(run_dir: str | Path) -> dict[str, Any]:
    """{stage: {"jobs": [{"id", "state", "restarts"}]}} for every stage submitted for run_dir."""
    path = RunDir(run_dir).jobs_file
    if not path.is_file():
        return {}
    return {stage: {"jobs": job_states(entry["ids"])} for stage, entry in json.loads(path.read_text()).items()}
