"""Where each stage of a run directory stands, read from its artifacts and state files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldmodels import rundir
from worldmodels.errors import DataError

STAGES = ("collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "evaluate", "report")


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """{"run_dir": ..., "stages": {stage: {"state": ..., counters...}}} for a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise DataError(f"{run_dir} is not a run directory (no {rundir.CONFIG_FILE})")
    stages = {name: {"state": "pending"} for name in STAGES}
    stages["collect"] = _collect_status(run_dir)
    return {"run_dir": str(run_dir), "stages": stages}


def _state(records: list[dict[str, Any]], done: int, total: int) -> str:
    """Combine the artifact count with the recorded states of the stage's tasks."""
    if total and done >= total:
        return "done"
    states = {r["state"] for r in records}
    if "running" in states:
        return "running"
    if "failed" in states:
        return "failed"
    return "partial" if done or states else "pending"


def _collect_status(run_dir: Path) -> dict[str, Any]:
    from worldmodels.collect import rollouts_path
    from worldmodels.dataset import EpisodeStore

    path = rollouts_path(run_dir)
    saved = rundir.saved_config(run_dir)
    total = saved.collect.episodes if saved else 0
    if not path.exists():
        out = {"episodes_done": 0, "episodes_total": total, "frames": 0}
    else:
        lengths = EpisodeStore.open(path).lengths()
        out = {"episodes_done": int((lengths > 0).sum()), "episodes_total": len(lengths), "frames": int(lengths.sum())}
    records = rundir.read_states(run_dir, "collect")
    out["state"] = _state(records, out["episodes_done"], out["episodes_total"])
    errors = [r["error"] for r in records if r.get("state") == "failed" and "error" in r]
    if errors and out["state"] == "failed":
        out["error"] = errors[0]
    return {"state": out.pop("state"), **out}


def format_status(status: dict[str, Any]) -> str:
    """A table for people: one line per stage with its state and counters."""
    lines = [f"run {status['run_dir']}"]
    for name, info in status["stages"].items():
        counters = ", ".join(f"{k}={v}" for k, v in info.items() if k != "state")
        lines.append(f"  {name:<17} {info['state']:<8} {counters}")
    return "\n".join(lines)


def to_json(status: dict[str, Any]) -> str:
    return json.dumps(status)
