"""The report stage (RUN_DIR/report/index.html) and push (the run's models to the Hugging Face Hub)."""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path

from worldmodels.checkpoint import latest_step
from worldmodels.config import Config, dump
from worldmodels.errors import ConfigError, DataError
from worldmodels.files import atomic_write
from worldmodels.rundir import CHECKPOINTS, RunDir


def _score_rows(results: dict) -> list[tuple[str, float, float]]:
    rows = [("controller (" + results.get("which", "best") + ")", results["mean"], results["std"]),
            ("random policy", results["random"]["mean"], results["random"]["std"])]
    return rows + [(name.replace("_", " "), r["mean"], r["std"]) for name, r in results["heuristics"].items()]


def write_report(cfg: Config, run_dir: str | Path) -> str:
    """report/index.html: every picture the stages left, the scores, the videos and the config.
    Returns a line for people."""
    from worldmodels.stages import STAGES
    from worldmodels.status import run_status

    run = RunDir(run_dir)
    report = run.report_dir
    report.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>World Models: {html.escape(cfg.env.id)}</h1>", f"<p>Run directory <code>{html.escape(str(run.path.resolve()))}</code></p>"]
    results = run.results()
    if results:
        rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{m:.1f}</td><td>{s:.1f}</td></tr>" for n, m, s in _score_rows(results))
        parts.append(f"<h2>Scores over {results['episodes']} episodes (same seeds for every policy)</h2>"
                     f"<table border=1 cellpadding=4><tr><th>policy</th><th>mean</th><th>std</th></tr>{rows}</table>")
    videos = sorted(run.videos.glob("*.mp4"))
    if videos:
        links = "".join(f'<li><a href="{html.escape(os.path.relpath(v, report))}">{v.name}</a></li>' for v in videos)
        parts.append(f"<h2>Videos</h2><ul>{links}</ul>")
    for stage in STAGES.values():
        for name, title in stage.figures:
            made = run.figure(stage.name, name)
            if made.is_file() and made != report / name:  # a reused stage's picture, from the run that made it
                shutil.copy(made, report / name)
            if (report / name).is_file():
                parts.append(f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">')
    status = run_status(run.path)["stages"]
    rows = "".join(f"<tr><td>{n}</td><td>{s['state']}</td><td>{html.escape(json.dumps({k: v for k, v in s.items() if k != 'state'}))}</td></tr>"
                   for n, s in status.items())
    parts.append(f"<h2>Stages</h2><table border=1 cellpadding=4>{rows}</table>")
    parts.append(f"<h2>Config</h2><pre>{html.escape(dump(cfg))}</pre>")
    page = "<!doctype html><html><head><meta charset=utf-8><title>World Models report</title></head><body>" + "\n".join(parts) + "</body></html>"
    atomic_write(report / "index.html", page.encode())
    return f"report: {report / 'index.html'}"


def model_card(cfg: Config, results: dict | None) -> str:
    lines = ["---", "tags: [world-models, reinforcement-learning, atari, cma-es]", "library_name: pytorch", "---", "",
             f"# World Models on {cfg.env.id}", "",
             "V (ConvVAE), M (MDN-RNN) and C (linear controller found by CMA-ES), after Ha & Schmidhuber (2018).",
             f"V: z={cfg.vae.z_size}; M: LSTM {cfg.mdnrnn.hidden} with {cfg.mdnrnn.gaussians} Gaussians per latent "
             f"dimension; C trained in the {cfg.controller.mode} game for {cfg.controller.generations} generations "
             f"(population {cfg.controller.popsize}, {cfg.controller.rollouts} rollouts each).", ""]
    if results:
        lines += [f"## Evaluation ({results['episodes']} episodes, the same seeds for every policy)", "",
                  "| policy | mean | std |", "| --- | --- | --- |"]
        lines += [f"| {n} | {m:.1f} | {s:.1f} |" for n, m, s in _score_rows(results)]
        lines.append("")
    lines += ["## Files", "", "- `models/{vae,mdnrnn,controller}.pt`: the final checkpoints (load with "
              "`torch.load(path, weights_only=True)`)", "- `results.json`: every episode's score", "- `report/`: plots, "
              "reconstructions, dreams", "- `config.yaml`: the exact configuration", ""]
    return "\n".join(lines)


def stage_folder(cfg: Config, run: RunDir, folder: Path) -> Path:
    """Lay out what push uploads: models, results, report, config and a model card."""
    (folder / "models").mkdir(parents=True, exist_ok=True)
    for stage, name in CHECKPOINTS.items():
        directory = run.checkpoints(stage)
        step = latest_step(directory)
        if step is None:
            raise DataError(f"nothing to push: no {name} checkpoint in {directory}")
        shutil.copy(directory / f"step-{step:09d}.pt", folder / "models" / f"{name}.pt")
    results = run.results()
    if results:
        (folder / "results.json").write_text(json.dumps(results, indent=1))
    if run.report_dir.is_dir():
        shutil.copytree(run.report_dir, folder / "report", dirs_exist_ok=True)
    shutil.copy(run.config_file, folder / "config.yaml")
    (folder / "README.md").write_text(model_card(cfg, results))
    return folder


def push(cfg: Config, run_dir: str | Path, repo_id: str | None, dry_run: Path | None) -> str:
    """Upload the run to `repo_id` (token from HF_TOKEN), or with dry_run write the folder there."""
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise DataError(f"nothing to push: {run.path} is not a run directory (no {run.config_file.name})")
    if dry_run is not None:
        return str(stage_folder(cfg, run, Path(dry_run)))
    if not repo_id:
        raise ConfigError("push needs --repo-id (or --dry-run DIR)")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = stage_folder(cfg, run, Path(tmp))
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload World Models run")
    return str(commit)
