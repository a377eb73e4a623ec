"""The pipeline's stages: their order, which of them split into tasks, and the call behind each.

The CLI, the Slurm job entries and `status` all name stages from here, and both ways of running
one (in a terminal, or as a submitit job) go through `run_stage`, so a stage is wired in one
place. `push` is not a pipeline stage: it runs from the CLI only, when a person asks for it.
"""

from __future__ import annotations

from pathlib import Path

from worldmodels.config import Config

STAGES = ("collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "evaluate", "report")
TASK_STAGES = ("collect", "encode", "evaluate")  # split into tasks that own disjoint episodes (Slurm array jobs)


def run_stage(stage: str, cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> str:
    """Run one stage (one task of it for TASK_STAGES) in-process; returns a line for people
    (empty on the MPI ranks that only serve the master)."""
    run_dir = Path(run_dir)
    if stage == "collect":
        from worldmodels.collect import collect, rollouts_path

        summary = collect(cfg, run_dir, task=task, num_tasks=num_tasks)
        return f"collect: {summary['episodes']} episodes in {rollouts_path(run_dir)} ({summary['collected']} collected now)"
    if stage == "train-vae":
        from worldmodels.train_vae import train_vae

        return f"train-vae: finished at step {train_vae(cfg, run_dir)}"
    if stage == "encode":
        from worldmodels.encode import encode, latents_path

        summary = encode(cfg, run_dir, task=task, num_tasks=num_tasks)
        return f"encode: {summary['episodes']} episodes in {latents_path(run_dir)} ({summary['encoded']} encoded now)"
    if stage == "train-mdnrnn":
        from worldmodels.train_mdnrnn import train_mdnrnn

        return f"train-mdnrnn: finished at step {train_mdnrnn(cfg, run_dir)}"
    if stage == "train-controller":
        from worldmodels.evolution import train_controller

        summary = train_controller(cfg, run_dir)
        if "best_fitness" not in summary:  # an MPI rank other than the master: the master speaks
            return ""
        return f"train-controller: finished at generation {summary['generation']}, best fitness {summary['best_fitness']:.1f}"
    if stage == "evaluate":
        from worldmodels.evaluate import evaluate

        summary = evaluate(cfg, run_dir, task=task, num_tasks=num_tasks)
        r = summary["results"]
        if r is None:
            return f"evaluate: {summary['episodes']} episodes scored; results.json waits for the other tasks"
        best = max(h["mean"] for h in r["heuristics"].values())
        return (f"evaluate: controller {r['mean']:.1f} +- {r['std']:.1f} over {r['episodes']} episodes; random "
                f"{r['random']['mean']:.1f}; best heuristic {best:.1f} -> {run_dir / 'eval' / 'results.json'}")
    if stage == "report":
        from worldmodels.report import write_report

        return f"report: {write_report(cfg, run_dir)}"
    raise ValueError(f"unknown stage {stage!r}")
