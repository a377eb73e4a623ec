"""The report stage: RUN_DIR/report/index.html, a page to read a run by and send to a colleague.

It shows the scores against the baselines that learn nothing and against published scores, the
controller's gameplay videos (copied into report/videos/, so the folder stands alone, as on the
Hub), every picture the stages left, where each stage stands, and the config. Plain HTML with no
scripts and nothing fetched from the network.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from worldmodels.config import Config, dump
from worldmodels.files import atomic_write
from worldmodels.pages import page, table
from worldmodels.reference import PUBLISHED, PUBLISHED_SOURCE
from worldmodels.rundir import RunDir
from worldmodels.scores import blocks, policy_scores, protocol, stats, summary_line

STAGE = "report"


def write_report(cfg: Config, run_dir: str | Path) -> str:
    """Write report/index.html from everything the run has made. Returns a line for people."""
    from worldmodels.stages import STAGES
    from worldmodels.status import run_status

    run = RunDir(run_dir)
    report = run.report_dir
    report.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>World Models on {html.escape(cfg.env.id)}</h1>",
            f'<p class="muted">Run directory <code>{html.escape(str(run.path.resolve()))}</code></p>']
    results = run.results()
    if results:
        body += _scores(cfg, results)
    if cfg.rounds.index:
        body += _rounds(run, cfg)
    body += _videos(run, report, results)
    for stage in STAGES.values():
        for name, title in stage.figures:
            made = run.figure(stage.name, name)
            if made.is_file() and made != report / name:  # a reused stage's picture, from the run that made it
                shutil.copy(made, report / name)
            if (report / name).is_file():
                body.append(f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">')
    made = {name: info for name, info in run_status(run.path)["stages"].items() if name != STAGE}  # not this page
    body += ["<h2>Stages</h2>", _stages(made),
             "<h2>Config</h2>", f"<details><summary>config.yaml</summary><pre>{html.escape(dump(cfg))}</pre></details>"]
    atomic_write(report / "index.html", page(f"World Models report: {run.path.name}", body).encode())
    return f"report: {report / 'index.html'}"


def _scores(cfg: Config, results: dict) -> list[str]:
    out = [f'<p class="lead">{html.escape(summary_line(results))}</p>', "<h2>Scores</h2>",
           f"<p>{html.escape(protocol(cfg, results))}.</p>"]
    for name, block in blocks(results).items():
        rows = [[html.escape(policy), *("{mean:.1f} {std:.1f} {min:g} {max:g} {distinct}".format(**stats(s)).split())]
                for policy, s in policy_scores(block).items()]
        out += [f"<h3>{html.escape(name)}</h3>",
                table(["policy", "mean", "std", "min", "max", "distinct scores"], rows, numeric={1, 2, 3, 4, 5})]
    published = [[html.escape(name), f"{score:,}"] for name, score in PUBLISHED.items()]
    return out + [f"<p>Published scores to read them against (mean episode return; {PUBLISHED_SOURCE}):</p>",
            table(["agent", "score"], published, numeric={1})]


def _rounds(run: RunDir, cfg: Config) -> list[str]:
    """The controller's mean after each round of iterative training so far, on the same episodes."""
    from worldmodels.rounds import score_rows

    return ["<h2>Rounds</h2>", f"<p>Round {cfg.rounds.index} of {cfg.rounds.count}: the controller's mean after each "
            "round, on the same evaluation episodes.</p>",
            table(["round", *cfg.evaluate.protocols], score_rows(run, cfg), numeric=set(range(len(cfg.evaluate.protocols) + 1)))]


def _videos(run: RunDir, report: Path, results: dict | None) -> list[str]:
    """The controller's gameplay, copied next to the page and embedded."""
    videos = sorted(run.videos.glob("controller-episode-*.mp4"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not videos:
        return []
    (report / "videos").mkdir(exist_ok=True)
    figures = []
    for video in videos:
        copy = report / "videos" / video.name
        if not copy.is_file() or copy.stat().st_size != video.stat().st_size:
            shutil.copy(video, copy)
        k = int(video.stem.rsplit("-", 1)[1])
        caption = f"evaluation episode {k}"
        if results and k < len(results["scores"]):
            caption += f" (seed {results['seeds'][k]}): score {results['scores'][k]:g}"
        figures.append(f'<figure><video controls muted preload="metadata" width="320" src="videos/{video.name}"></video>'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return ["<h2>The controller playing</h2>", *figures]


def _stages(stages: dict[str, dict]) -> str:
    def details(info: dict) -> str:
        shown = {k: v for k, v in info.items() if k not in ("state", "reused_from", "jobs")}
        return ", ".join(f"{k.replace('_', ' ')} {v:.1f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                         for k, v in shown.items())

    rows = [[name, info["state"], html.escape(f"reused from {info['reused_from']}" if "reused_from" in info else "this run"),
             html.escape(details(info))] for name, info in stages.items()]
    return table(["stage", "state", "made by", "details"], rows)
