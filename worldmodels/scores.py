"""Reading evaluate's results (eval/results.json) for people: one row per policy, the best
no-learning baseline, and the sentence that names the protocol. The report and the Hub card use
these, so both say the same thing."""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodels.config import Config


def by_policy(results: dict[str, Any]) -> dict[str, list[float]]:
    """Each policy's episode scores under evaluate's names (controller, random, always_fire, ...)."""
    return {"controller": results["scores"], "random": results["random"]["scores"],
            **{name: r["scores"] for name, r in results["heuristics"].items()}}


def policy_scores(results: dict[str, Any]) -> dict[str, list[float]]:
    """by_policy under names for people: the controller first, then the baselines that learn nothing."""
    names = {"controller": f"controller ({results.get('which', 'best')})", "random": "random policy"}
    return {names.get(name, name.replace("_", " ")): scores for name, scores in by_policy(results).items()}


def best_baseline(results: dict[str, Any]) -> tuple[str, float]:
    """The no-learning policy with the highest mean (its name for people), and that mean."""
    baselines = {name: float(np.mean(scores)) for name, scores in list(policy_scores(results).items())[1:]}
    name = max(baselines, key=baselines.get)
    return name, baselines[name]


def summary_line(results: dict[str, Any]) -> str:
    """"The controller scores M +- S over N episodes (K distinct scores); the best baseline ... ."""
    name, best = best_baseline(results)
    gain = f" ({100 * (results['mean'] / best - 1):+.0f}%)" if best > 0 else ""
    return (f"The controller scores {results['mean']:.1f} ± {results['std']:.1f} over {results['episodes']} episodes "
            f"({len(set(results['scores']))} distinct scores); the best policy that learns nothing, {name}, scores "
            f"{best:.1f}{gain}.")


def protocol_name(cfg: Config) -> str:
    """The evaluation protocol in two words: v4 (no sticky actions) or sticky (with its probability)."""
    p = cfg.env.repeat_action_probability
    return f"sticky {p:g}" if p else "v4"


def protocol(cfg: Config, results: dict[str, Any]) -> str:
    """One sentence naming how the scores were measured."""
    sticky = cfg.env.repeat_action_probability
    actions = f"sticky actions (repeat probability {sticky})" if sticky else "no sticky actions (the v4 protocol)"
    seed = cfg.evaluate.seed if cfg.evaluate.seed is not None else cfg.seed
    return (f"{results['episodes']} episodes of {cfg.env.id}: 1 to {cfg.env.noop_max} no-op starts, frame skip "
            f"{cfg.env.frame_skip} with max-pooling, {actions}, at most {cfg.env.max_steps:,} steps; every policy plays "
            f"the same episodes (their seeds are in results.json, drawn from seed {seed})")


def stats(scores: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "min": float(np.min(scores)),
            "max": float(np.max(scores)), "distinct": len(set(scores))}
