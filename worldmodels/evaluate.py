"""The evaluate stage: the controller and honest baselines on the same episodes, plus videos.

Every policy plays the same `evaluate.episodes` episodes (seeds drawn from `evaluate.seed`, on a
stream of their own): the trained controller (`evaluate.controller`: the best solution seen
or the CMA-ES mean), the uniformly random policy, and two heuristics that learn nothing (always
FIRE; a left/right sweep while firing). A controller that only learned to hold FIRE shows up as
no better than the heuristic.

Work is split into tasks owning disjoint episodes; each task keeps its scores in
eval/parts/POLICY.taskI-of-N.json, rewritten atomically after every episode, so a rerun plays
only what is missing. Whichever task finds every part complete writes eval/results.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels import seeds
from worldmodels.config import Config
from worldmodels.distributed import task_episodes
from worldmodels.preemption import StopFlag
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.scores import by_policy, protocol_name
from worldmodels.tracking import Tracker, log

STAGE = "evaluate"
POLICIES = ("controller", "random", "always_fire", "sweep_fire")


def eval_job(cfg: Config, k: int):
    """Evaluation episode k, the same game for every policy (the random one draws from its stream)."""
    from worldmodels.rollout import Episode

    return Episode(k, seeds.seed(cfg, "evaluate.env", k), seeds.rng(cfg, "evaluate.policy", k), tag=0)


def _part_path(run: RunDir, policy: str, task: int, num_tasks: int) -> Path:
    return run.eval_parts / f"{policy}.task{task}-of-{num_tasks}.json"


def _make_policy(name: str, solution: np.ndarray, world, action_names: list[str], batch: int):
    from worldmodels.controller import WorldModelPolicy
    from worldmodels.policies import RandomRepeatPolicy, ScriptedPolicy

    if name == "controller":
        vae, mdnrnn = world
        return WorldModelPolicy(vae, mdnrnn, torch.from_numpy(solution[None]), batch)
    if name == "random":
        return RandomRepeatPolicy(len(action_names), 1, batch)
    return ScriptedPolicy(name, action_names, batch)


def evaluate(cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> str:
    """Play this task's episodes with every policy; write results.json once all tasks are done.
    Returns a line for people."""
    from worldmodels.controller import controller_size
    from worldmodels.envs import EnvPool
    from worldmodels.rollout import play

    owned = task_episodes(cfg.evaluate.episodes, task, num_tasks)
    run = RunDir(run_dir)
    world = run.load_world_model(cfg)
    size = controller_size(cfg.vae.z_size, world[1].hidden, world[1].actions)
    solution, source = run.load_controller(cfg, size)
    parts = {name: _load_part(_part_path(run, name, task, num_tasks)) for name in POLICIES}
    scored = _scores(run)  # from every task split: a rerun with other tasks plays only what is missing
    todo = {name: [k for k in owned if k not in scored[name]] for name in POLICIES}
    total = len(owned) * len(POLICIES)
    batches = {name: min(cfg.evaluate.batch, len(todo[name])) for name in POLICIES if todo[name]}
    envs = EnvPool(cfg.env)  # one set for every policy
    # every policy is made before any play: a game without the heuristics' actions fails at once
    policies = {name: _make_policy(name, solution, world, envs.take(1)[0].action_names, batch) for name, batch in batches.items()}
    with Tracker(cfg, run, STAGE, total=total, done=total - sum(map(len, todo.values())), unit="episodes",
                 task=task if num_tasks > 1 else None) as tracker, StopFlag() as stop, torch.no_grad():
        for name, policy in policies.items():
            path = _part_path(run, name, task, num_tasks)

            def done(played, name=name, path=path) -> None:
                parts[name][str(played.job.k)] = played.ret
                atomic_write(path, json.dumps(parts[name]).encode())
                tracker.advance(1, **{f"evaluate/{name}": played.ret})

            batch = batches[name]
            play(cfg.env, policy, [eval_job(cfg, k) for k in todo[name]], done, batch=batch, stop=stop, envs=envs.take(batch))
        if task == 0:
            videos = record_videos(cfg, run, solution, world, stop)
            tracker.videos({f"{STAGE}/{path.stem}": (path, f"evaluation episode {path.stem.rsplit('-', 1)[1]}")
                            for path in videos})
        r = assemble(cfg, run, source)
        if r is not None:  # this task completed the results: it logs them
            tracker.images({f"{STAGE}/scores": run.report_dir / "eval-scores.png"})
            tracker.table(f"{STAGE}/episodes", ["protocol", "policy", "episode", "seed", "score"],
                          [[protocol_name(cfg), name, k, r["seeds"][k], score] for name, scores in by_policy(r).items()
                           for k, score in enumerate(scores)])
    if r is None:
        return f"evaluate: {len(owned)} episodes scored; results.json waits for the other tasks"
    best = max(h["mean"] for h in r["heuristics"].values())
    return (f"evaluate: controller {r['mean']:.1f} +- {r['std']:.1f} over {r['episodes']} episodes; random "
            f"{r['random']['mean']:.1f}; best heuristic {best:.1f} -> {run.results_file}")


def _load_part(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _scores(run: RunDir) -> dict[str, dict[int, float]]:
    """Every episode score of every policy found in the parts, whichever task wrote it."""
    scores: dict[str, dict[int, float]] = {name: {} for name in POLICIES}
    for path in run.eval_parts.glob("*.json") if run.eval_parts.is_dir() else []:
        name = path.name.split(".task")[0]
        if name in scores:
            scores[name].update({int(k): v for k, v in _load_part(path).items()})
    return scores


def assemble(cfg: Config, run: RunDir, source: Path) -> dict[str, Any] | None:
    """eval/results.json from every task's parts, once every episode of every policy is scored."""
    scores = _scores(run)
    wanted = range(cfg.evaluate.episodes)
    if any(not set(wanted) <= set(scores[name]) for name in POLICIES):
        missing = {name: cfg.evaluate.episodes - len(set(scores[name]) & set(wanted)) for name in POLICIES}
        log.info("evaluate: results.json waits for other tasks (missing episodes: %s)", missing)
        return None

    def summary(name: str) -> dict[str, Any]:
        values = [scores[name][k] for k in wanted]
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "scores": values}

    results = {"episodes": cfg.evaluate.episodes, **summary("controller"), "random": summary("random"),
               "heuristics": {name: summary(name) for name in ("always_fire", "sweep_fire")},
               "controller": str(source), "which": cfg.evaluate.controller, "env_id": cfg.env.id,
               "seeds": [eval_job(cfg, k).seed for k in wanted]}
    atomic_write(run.results_file, json.dumps(results, indent=1).encode())
    from worldmodels.plots import plot_scores

    plot_scores(run, results)
    return results


def record_videos(cfg: Config, run: RunDir, solution: np.ndarray, world, stop=None) -> list[Path]:
    """eval/videos/controller-episode-K.mp4 for the first `evaluate.videos` evaluation episodes."""
    from worldmodels.video import record_episode

    for k in range(min(cfg.evaluate.videos, cfg.evaluate.episodes)):
        path = run.videos / f"controller-episode-{k}.mp4"
        if not path.is_file():
            record_episode(cfg.env, _make_policy("controller", solution, world, [], 1), eval_job(cfg, k), path, stop)
    return sorted(run.videos.glob("*.mp4"))
