"""What `status` prints: a run directory's stages, or every point of a sweep, with their Slurm jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_view(run_dir: Path) -> dict[str, Any]:
    """run_status, plus each stage's Slurm jobs where the run has submitted some."""
    from jobs.status import slurm_view
    from worldmodels.rundir import RunDir
    from worldmodels.status import run_status

    status = run_status(run_dir)
    if RunDir(run_dir).jobs_file.is_file():
        for stage, view in slurm_view(run_dir).items():
            status["stages"][stage].update(view)
    return status


def print_status(directory: Path, as_json: bool) -> None:
    from worldmodels.status import format_status
    from worldmodels.sweep import Sweep

    if not Sweep.is_sweep(directory):
        status = run_view(directory)
        print(json.dumps(status) if as_json else format_status(status))
        return
    sweep = Sweep.open(directory)
    points = {point.name: run_view(point.run_dir) if point.run_dir.joinpath("config.yaml").is_file() else None
              for point in sweep.points}
    if as_json:
        print(json.dumps({"sweep": {"dir": str(directory), "points": points}}))
        return
    print(sweep.format_status(points))
