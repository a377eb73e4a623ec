"""Reading evaluate's results (eval/results.json) for people: one row per policy, the best
no-learning baseline, and the sentence that names the protocol. The report and the Hub card use
these, so both say the same thing."""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodels.config import PROTOCOLS, Config


def by_policy(results: dict[str, Any]) -> dict[str, list[float]]:
    """Each policy's episode scores under evaluate's names (controller, random, always_fire, ...),
    from a protocol's block (the top level is the first protocol's)."""
    return {"controller": results["scores"], "random": results["random"]["scores"],
            **{name: r["scores"] for name, r in results["heuristics"].items()}}


def blocks(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{protocol: its block} of results.json, in the evaluation's order (a results.json written
    before there were protocols holds one, played without sticky actions: v4)."""
    return results.get("protocols") or {"v4": results}


def policy_scores(results: dict[str, Any]) -> dict[str, list[float]]:
    """by_policy under names for people: the controller first, then the baselines that learn nothing."""
    names = {"controller": f"controller ({results.get('which', 'best')})", "random": "random policy"}
    return {names.get(name, name.replace("_", " ")): scores for name, scores in by_policy(results).items()}


def best_baseline(results: dict[str, Any]) -> tuple[str, float]:
    """The no-learning policy with the highest mean (its name for people), and that mean, in a block."""
    baselines = {name: float(np.mean(scores)) for name, scores in list(policy_scores(results).items())[1:]}
    name = max(baselines, key=baselines.get)
    return name, baselines[name]


def summary_line(results: dict[str, Any]) -> str:
    """"Under v4 the controller scores M ± S (K distinct scores), the best policy that learns nothing ... ."""
    clauses = []
    for protocol, block in blocks(results).items():
        name, best = best_baseline(block)
        gain = f", {100 * (block['mean'] / best - 1):+.0f}%" if best > 0 else ""
        clauses.append(f"under {protocol} the controller scores {block['mean']:.1f} ± {block['std']:.1f} "
                       f"({len(set(block['scores']))} distinct scores) against {best:.1f} for the best policy that "
                       f"learns nothing, {name}{gain}")
    text = "; ".join(clauses)
    return f"Over {results['episodes']} episodes, {text}."


def headline(results: dict[str, Any]) -> str:
    """One line for a terminal: the controller and the best baseline under each protocol."""
    return "; ".join(f"{protocol}: controller {b['mean']:.1f} +- {b['std']:.1f} ({len(set(b['scores']))} distinct), "
                     f"random {b['random']['mean']:.1f}, best heuristic {max(h['mean'] for h in b['heuristics'].values()):.1f}"
                     for protocol, b in blocks(results).items()) + f" over {results['episodes']} episodes"


def protocol(cfg: Config, results: dict[str, Any]) -> str:
    """One sentence naming how the scores were measured."""
    names = {"v4": "v4 (no sticky actions)",
             "sticky": f"sticky (the previous action repeated with probability {PROTOCOLS['sticky']} per frame, "
                       "Machado et al. 2018, drawn from the episode's seed)"}
    seed = cfg.evaluate.seed if cfg.evaluate.seed is not None else cfg.seed
    return (f"{results['episodes']} episodes of {cfg.env.id} under each protocol, "
            f"{' and '.join(names[p] for p in blocks(results))}: 1 to {cfg.env.noop_max} no-op starts, frame skip "
            f"{cfg.env.frame_skip} with max-pooling, at most {cfg.env.max_steps:,} steps; every policy plays "
            f"the same episodes (their seeds are in results.json, drawn from seed {seed})")


def stats(scores: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "min": float(np.min(scores)),
            "max": float(np.max(scores)), "distinct": len(set(scores))}
