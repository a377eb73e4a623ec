"""Where each stage of a run directory stands, read from its artifacts and state files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldmodels import rundir
from worldmodels.errors import DataError
from worldmodels.stages import STAGES


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """{"run_dir": ..., "stages": {stage: {"state": ..., counters...}}} for a run directory."""
    from worldmodels.collect import rollouts_path
    from worldmodels.encode import latents_path

    run_dir = Path(run_dir)
    cfg = rundir.saved_config(run_dir)
    if cfg is None:
        raise DataError(f"{run_dir} is not a run directory (no {rundir.CONFIG_FILE})")
    stages = {name: {"state": "pending"} for name in STAGES}
    stages["collect"] = _episodes_status(run_dir, "collect", rollouts_path(run_dir), cfg.collect.episodes)
    stages["train-vae"] = _training_status(run_dir, "train-vae", cfg.vae.steps)
    stages["encode"] = _episodes_status(run_dir, "encode", latents_path(run_dir), cfg.collect.episodes)
    stages["train-mdnrnn"] = _training_status(run_dir, "train-mdnrnn", cfg.mdnrnn.steps)
    stages["train-controller"] = _controller_status(run_dir, cfg.controller.generations)
    stages["evaluate"] = _evaluate_status(run_dir, cfg.evaluate.episodes)
    report = run_dir / "report" / "index.html"
    stages["report"] = {"state": "done"} if report.is_file() else _state(run_dir, "report", 0, 1)
    return {"run_dir": str(run_dir), "stages": stages}


def _state(run_dir: Path, stage: str, done: int, total: int) -> dict[str, Any]:
    """Combine the artifacts' progress with the recorded states of the stage's tasks."""
    records = rundir.read_states(run_dir, stage)
    states = {r["state"] for r in records}
    if total and done >= total:
        return {"state": "done"}
    if "running" in states:
        return {"state": "running"}
    errors = [r["error"] for r in records if r.get("state") == "failed" and "error" in r]
    if errors:
        return {"state": "failed", "error": errors[0]}
    return {"state": "partial" if done or states else "pending"}


def _episodes_status(run_dir: Path, stage: str, path: Path, total: int) -> dict[str, Any]:
    from worldmodels.dataset import EpisodeStore

    lengths = EpisodeStore.open(path).lengths() if path.exists() else []
    done = int((lengths > 0).sum()) if len(lengths) else 0
    counters = {"episodes_done": done, "episodes_total": total, "frames": int(sum(lengths))}
    return {**_state(run_dir, stage, done, total), **counters}


def _training_status(run_dir: Path, stage: str, total: int) -> dict[str, Any]:
    from worldmodels.checkpoint import latest_step

    step = latest_step(rundir.checkpoint_dir(run_dir, stage)) or 0
    return {**_state(run_dir, stage, step, total), "step": step, "total_steps": total}


def _controller_status(run_dir: Path, total: int) -> dict[str, Any]:
    from worldmodels.checkpoint import latest_step

    directory = rundir.checkpoint_dir(run_dir, "train-controller")
    generation = latest_step(directory) or 0
    out = {**_state(run_dir, "train-controller", generation, total), "generation": generation, "total_generations": total}
    if generation:
        marker = json.loads((directory / f"step-{generation:09d}.json").read_text())
        out["best_fitness"] = marker.get("best_fitness")
    return out


def _evaluate_status(run_dir: Path, total: int) -> dict[str, Any]:
    path = run_dir / "eval" / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
        return {"state": "done", "mean": results["mean"], "std": results["std"]}
    return _state(run_dir, "evaluate", 0, total)


def format_status(status: dict[str, Any]) -> str:
    """A table for people: one line per stage with its state and counters."""
    lines = [f"run {status['run_dir']}"]
    for name, info in status["stages"].items():
        counters = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("state", "jobs"))
        if info.get("jobs"):
            counters += "  jobs: " + ", ".join(f"{j['id']} {j['state']}" + (f" (restarts {j['restarts']})" if j["restarts"] else "")
                                              for j in info["jobs"])
        lines.append(f"  {name:<17} {info['state']:<8} {counters}")
    return "\n".join(lines)


def to_json(status: dict[str, Any]) -> str:
    return json.dumps(status)
