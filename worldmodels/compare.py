"""`compare`: results over seeds, per point, with the uncertainty a reader needs to trust a difference.

Runs are grouped into points by the settings that differ between them, seeds aside (keys named
`seed`). For each point: every run's evaluation mean (one number per seed), their mean with a 95%
bootstrap confidence interval (scipy.stats.bootstrap, percentile method, over the per-seed means),
and the interquartile mean of every evaluation episode of the point's runs, the two statistics that
Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice") recommend over a bare mean.
The no-learning baselines are shown beside them, and the learning curves (CMA-ES fitness per
generation) as the mean over seeds with the range of the seeds around it.

Written to OUT/results.json and OUT/index.html (OUT: SWEEP_DIR/compare by default).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.errors import ConfigError, DataError
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir, run_holding
from worldmodels.scores import blocks
from worldmodels.tracking import log

BASELINES = ("random", "always_fire", "sweep_fire")
CONFIDENCE = 0.95


def runs_of(dirs: list[Path]) -> list[RunDir]:
    """The run directories behind the arguments: sweep folders are opened into their points."""
    from worldmodels.sweep import Sweep

    runs = []
    for directory in dirs:
        if Sweep.is_sweep(directory):
            runs += [RunDir(p.run_dir) for p in Sweep.open(directory).points]
        elif RunDir(directory).config_file.is_file():
            runs.append(RunDir(directory))
        else:
            raise DataError(f"compare: {directory} is neither a run directory nor a sweep folder")
    return runs


def bootstrap_ci(values: list[float]) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean (the value itself for a single seed)."""
    from scipy.stats import bootstrap

    if len(values) < 2 or len(set(values)) == 1:
        return float(np.mean(values)), float(np.mean(values))
    res = bootstrap((np.asarray(values),), np.mean, confidence_level=CONFIDENCE, n_resamples=9999,
                    method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm(values: list[float]) -> float:
    """The interquartile mean: the mean of the middle 50% of the values."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values), 0.25))


BESIDE_THE_SCORES = {"evaluate.videos"}  # part of the evaluation's identity, not of its scores


def summarise(runs: list[RunDir]) -> dict[str, Any]:
    """Per point: its settings, runs, seeds, per-seed means, mean, CI, IQM, baselines and learning curve."""
    from worldmodels.identity import ADDED_SINCE_FORMAT, identity

    finished = []
    for run in runs:
        results = run.results()
        if results is None:
            log.warning("compare: %s has no eval/results.json yet; left out", run.path)
        else:
            # what the scores depend on: the evaluation's identity (no operational keys, no rounds.count
            # of a round 0; a key it leaves out for having its old value has that value), without what
            # it records beside the scores
            flat = {**ADDED_SINCE_FORMAT, **identity(run.saved_config(), "evaluate")}
            flat = {k: v for k, v in flat.items() if k not in BESIDE_THE_SCORES}
            finished.append((run, flat, results))
    if not finished:
        raise DataError("compare: none of the runs has been evaluated yet (eval/results.json)")
    keys = sorted({k for _, flat, _ in finished for k in flat})
    varying = [k for k in keys if len({json.dumps(flat.get(k)) for _, flat, _ in finished}) > 1]
    seed_keys = [k for k in varying if k.rpartition(".")[2] == "seed"]
    setting_keys = [k for k in varying if k not in seed_keys]
    if "seed" in seed_keys:  # a stage's seed that is the run seed in every run (its default) says nothing more
        seed_keys = [k for k in seed_keys if k == "seed" or any(flat.get(k) != flat["seed"] for _, flat, _ in finished)]
    groups: dict[str, list] = {}
    for run, flat, results in finished:
        label = ", ".join(f"{k}={flat.get(k)}" for k in setting_keys) or "all runs"
        groups.setdefault(label, []).append((run, flat, results))
    points = []
    for label, members in groups.items():
        scores = [r["mean"] for _, _, r in members]
        low, high = bootstrap_ci(scores)
        episodes = [s for _, _, r in members for s in r["scores"]]
        # every protocol all of the point's runs were evaluated under, the headline first
        names = [name for name in blocks(members[0][2]) if all(name in blocks(r) for _, _, r in members)]
        protocols = {}
        for name in names:
            means = [blocks(r)[name]["mean"] for _, _, r in members]
            protocols[name] = dict(zip(("scores", "mean", "ci_low", "ci_high"), (means, float(np.mean(means)), *bootstrap_ci(means))))
        points.append({
            "point": label, "settings": {k: members[0][1].get(k) for k in setting_keys},
            "runs": [str(run.path) for run, _, _ in members],
            "seeds": [{k: flat.get(k) for k in seed_keys} for _, flat, _ in members],
            "scores": scores, "mean": float(np.mean(scores)), "ci_low": low, "ci_high": high, "iqm": iqm(episodes),
            "baselines": {name: float(np.mean([_baseline(r, name) for _, _, r in members])) for name in BASELINES},
            "protocols": protocols,
            "curve": _curve([run.fitness_history() for run, _, _ in members]),
        })
    first = finished[0][2]
    protocol = (f"{first['env_id']}, no-op starts, {first['episodes']} evaluation episodes per run and protocol "
                f"({', '.join(blocks(first))}; the first is the headline), the same episode "
                "seeds for every policy of a run; per point: mean over seeds of the controller's mean score, "
                f"{int(CONFIDENCE * 100)}% percentile bootstrap interval over seeds, IQM over every episode")
    return {"protocol": protocol, "seed_keys": seed_keys, "setting_keys": setting_keys, "points": points}


def _baseline(results: dict[str, Any], name: str) -> float:
    return results["random"]["mean"] if name == "random" else results["heuristics"][name]["mean"]


def _curve(histories: list[list[dict[str, float]]]) -> dict[str, list[float]]:
    """Mean fitness of each generation: its mean over seeds and the lowest and highest seed."""
    length = min((len(h) for h in histories), default=0)
    per_seed = np.array([[g["mean"] for g in h[:length]] for h in histories]) if length else np.zeros((0, 0))
    return {"generation": list(range(1, length + 1)), "mean": per_seed.mean(0).tolist() if length else [],
            "low": per_seed.min(0).tolist() if length else [], "high": per_seed.max(0).tolist() if length else []}


def compare(dirs: list[Path], out: Path | None = None) -> Path:
    """Write OUT/results.json and OUT/index.html; returns the page's path."""
    from worldmodels.sweep import Sweep

    where = f"--out {out}"
    if out is None:
        out = (dirs[0] / "compare") if len(dirs) == 1 and Sweep.is_sweep(dirs[0]) else Path("compare")
        where = f"the output folder {out} (the default here)"
    if (run := run_holding(out)) is not None:
        raise ConfigError(f"{where} lies in the run directory {run}, whose files it could replace: choose another "
                          "folder with --out")
    summary = summarise(runs_of(dirs))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", json.dumps(summary, indent=1).encode())
    _plot_scores(summary, out / "scores.png")
    _plot_curves(summary, out / "learning-curves.png")
    atomic_write(out / "index.html", _page(summary).encode())
    return out / "index.html"


def _page(summary: dict[str, Any]) -> str:
    from worldmodels.pages import page, table

    others = sorted({name for p in summary["points"] for name in list(p.get("protocols", {}))[1:]})

    def other(p: dict[str, Any], name: str) -> list[str]:
        q = p.get("protocols", {}).get(name)
        return [f"{q['mean']:.1f}", f"[{q['ci_low']:.1f}, {q['ci_high']:.1f}]"] if q else ["", ""]

    rows = [[html.escape(p["point"]), str(len(p["runs"])), f"{p['mean']:.1f}", f"[{p['ci_low']:.1f}, {p['ci_high']:.1f}]",
             f"{p['iqm']:.1f}", ", ".join(f"{s:.1f}" for s in p["scores"]), *(f"{p['baselines'][b]:.1f}" for b in BASELINES),
             *(cell for name in others for cell in other(p, name))]
            for p in summary["points"]]
    header = ["point", "seeds", "mean", "95% CI", "IQM", "per-seed means", *(b.replace("_", " ") for b in BASELINES),
              *(f"{label} ({name})" for name in others for label in ("mean", "95% CI"))]
    runs = "".join(f"<li>{html.escape(p['point'])}: " + ", ".join(f"<code>{html.escape(r)}</code>" for r in p["runs"])
                   + "</li>" for p in summary["points"])
    return page("World Models comparison", [
        "<h1>World Models: comparison over seeds</h1>", f"<p>{html.escape(summary['protocol'])}</p>",
        f"<p>Seeds vary over: {html.escape(', '.join(summary['seed_keys']) or 'nothing (one run per point)')}</p>",
        table(header, rows, numeric={1, 2, 4, *range(6, 6 + len(BASELINES)), *range(6 + len(BASELINES), len(header), 2)}),
        '<h2>Scores</h2><img src="scores.png" alt="mean with confidence interval per point">',
        '<h2>Learning curves</h2><img src="learning-curves.png" alt="CMA-ES fitness per generation">',
        f"<h2>Runs</h2><ul>{runs}</ul>"])


def _plot_scores(summary: dict[str, Any], path: Path) -> None:
    from worldmodels.plots import figure, save_figure

    points = summary["points"]
    fig = figure(figsize=(max(4, 1.6 * len(points)), 3.5))
    ax = fig.subplots()
    for i, p in enumerate(points):
        ax.errorbar([i], [p["mean"]], yerr=[[p["mean"] - p["ci_low"]], [p["ci_high"] - p["mean"]]], fmt="o", capsize=5,
                    color="C0", label="mean, 95% CI" if i == 0 else None)
        ax.plot([i] * len(p["scores"]), p["scores"], "x", color="C1", label="one seed" if i == 0 else None)
    for j, name in enumerate(BASELINES):
        ax.axhline(np.mean([p["baselines"][name] for p in points]), ls="--", lw=1, color=f"C{j + 2}", label=name.replace("_", " "))
    ax.set_xticks(range(len(points)), [p["point"] for p in points], fontsize=7, rotation=15)
    ax.set_ylabel("evaluation score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_curves(summary: dict[str, Any], path: Path) -> None:
    from worldmodels.plots import figure, save_figure

    fig = figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for i, p in enumerate(summary["points"]):
        c = p["curve"]
        if c["generation"]:
            ax.plot(c["generation"], c["mean"], color=f"C{i}", label=p["point"])
            ax.fill_between(c["generation"], c["low"], c["high"], color=f"C{i}", alpha=0.2)
    ax.set_xlabel("generation")
    ax.set_ylabel("population mean fitness\n(in the game it was trained in)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
