"""Where each stage of a run directory stands, read from its stage records, artifacts and state files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldmodels.errors import DataError
from worldmodels.rundir import RunDir
from worldmodels.stages import STAGES


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """{"run_dir": ..., "stages": {stage: {"state": ..., "reused_from"?: ..., counters...}}}."""
    run = RunDir(run_dir)
    cfg = run.saved_config()
    if cfg is None:
        raise DataError(f"{run.path} is not a run directory (no {run.config_file.name})")
    stages = {}
    for name, stage in STAGES.items():
        owner = run.owner(name)
        done, counters = stage.progress(run, cfg)
        info = {**_state(owner, name, done, stage.units(cfg)), **counters}
        if owner is not run:
            info["reused_from"] = str(owner.path)
        stages[name] = info
    status: dict[str, Any] = {"run_dir": str(run.path), "stages": stages}
    if cfg.rounds.index == 0:
        from worldmodels.rounds import later_rounds

        later = [{"round": k, **run_status(r.path)} for k, r in later_rounds(run.path)]
        if later:
            status["rounds"] = later
    return status


def _state(run: RunDir, stage: str, done: int, total: int) -> dict[str, Any]:
    """Combine the artifacts' progress with the recorded states of the stage's tasks."""
    records = run.read_states(stage)
    states = {r["state"] for r in records}
    if done >= total:  # a 0-step stage reports -1 until its step-0 checkpoint exists
        return {"state": "done"}
    if "running" in states:
        return {"state": "running"}
    errors = [r["error"] for r in records if r.get("state") == "failed" and "error" in r]
    if errors:
        return {"state": "failed", "error": errors[0]}
    return {"state": "partial" if done > 0 or states else "pending"}


def format_status(status: dict[str, Any]) -> str:
    """A table for people: one line per stage with its state and counters."""
    lines = [f"run {status['run_dir']}"]
    for name, info in status["stages"].items():
        counters = ", ".join(f"{k}={_first_line(v)}" for k, v in info.items() if k not in ("state", "jobs", "reused_from"))
        if info.get("jobs"):
            counters += "  jobs: " + ", ".join(_job(j) for j in info["jobs"])
        where = f"reused from {info['reused_from']}" if "reused_from" in info else "own"
        lines.append(f"  {name:<17} {info['state']:<8} {where:<5} {counters}")
    for later in status.get("rounds", []):  # iterative training: every round after round 0, each a run directory
        lines += [f"round {later['round']}: " + format_status(later)]
    return "\n".join(lines)


def _first_line(value: Any) -> str:
    """A value for the table. A failed stage's error can span lines (a compiler's does): the table keeps
    one line per stage; `--json` and the stage's log keep all of it."""
    lines = str(value).splitlines() or [""]
    return lines[0] + (" ..." if len(lines) > 1 else "")


def _job(job: dict[str, Any]) -> str:
    """One job for the table: its last attempt (id, state, elapsed, peak memory, nodes), then the
    earlier ones, e.g. `412_0 COMPLETED 00:00:41 310 MB n2 after NODE_FAIL on n1 (exit 0:0)`."""
    attempts = job.get("attempts")
    if not attempts:  # from scontrol: no history
        return f"{job['id']} {job['state']}" + (f" (restarts {job['restarts']})" if job["restarts"] else "")
    last = attempts[-1]
    text = f"{job['id']} {last['state']} {last['elapsed']} {last['max_rss_mb']:.0f} MB {last['nodes']}"
    earlier = [f"{a['state']} on {a['nodes']} (exit {a['exit_code']})" for a in attempts[:-1]]
    return text + (f" after {', '.join(earlier)}" if earlier else "")


def to_json(status: dict[str, Any]) -> str:
    return json.dumps(status)
