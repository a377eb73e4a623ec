"""The evaluate stage: the controller and honest baselines on the same episodes, plus videos.

Every policy plays the same `evaluate.episodes` episodes (seeds drawn from the run seed, apart
from the training seeds): the trained controller (`evaluate.controller`: the best solution seen
or the CMA-ES mean), the uniformly random policy, and two heuristics that learn nothing (always
FIRE; a left/right sweep while firing). A controller that only learned to hold FIRE shows up as
no better than the heuristic.

Work is split into tasks owning disjoint episodes; each task keeps its scores in
eval/parts/POLICY.taskI-of-N.json, rewritten atomically after every episode, so a rerun plays
only what is missing. Whichever task finds every part complete writes eval/results.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels import rundir
from worldmodels.checkpoint import finished_checkpoint, load_file
from worldmodels.collect import task_episodes
from worldmodels.config import Config
from worldmodels.errors import DataError
from worldmodels.preemption import StopFlag
from worldmodels.tracking import Tracker, log

STAGE = "evaluate"
POLICIES = ("controller", "random", "always_fire", "sweep_fire")
EVAL = 20  # seed purpose: evaluation episodes


def eval_seed(cfg: Config, k: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, EVAL, k]).generate_state(1, np.uint32)[0])


def eval_job(cfg: Config, k: int):
    """Evaluation episode k, the same game for every policy (the random one draws from its stream)."""
    from worldmodels.envs import episode_rng
    from worldmodels.rollout import Episode

    return Episode(k, eval_seed(cfg, k), episode_rng(cfg.seed + EVAL, k, stream=1), tag=0)


def controller_solution(cfg: Config, run_dir: str | Path, size: int) -> tuple[np.ndarray, Path]:
    """The controller vector evaluate plays (best or mean) and the checkpoint it came from."""
    path = finished_checkpoint(rundir.checkpoint_dir(run_dir, "train-controller"), cfg.controller.generations, "train-controller")
    state = load_file(path)
    solution = state[cfg.evaluate.controller].double().numpy()
    if solution.shape != (size,):
        raise DataError(f"{path}: controller has {solution.size} parameters, the world model needs {size}")
    return solution, path


def _parts_dir(run_dir: Path) -> Path:
    return run_dir / "eval" / "parts"


def _part_path(run_dir: Path, policy: str, task: int, num_tasks: int) -> Path:
    return _parts_dir(run_dir) / f"{policy}.task{task}-of-{num_tasks}.json"


def _make_policy(name: str, solution: np.ndarray, world, action_names: list[str], batch: int):
    from worldmodels.controller import WorldModelPolicy
    from worldmodels.policies import RandomRepeatPolicy, ScriptedPolicy

    if name == "controller":
        vae, mdnrnn = world
        return WorldModelPolicy(vae, mdnrnn, torch.from_numpy(solution[None]), batch)
    if name == "random":
        return RandomRepeatPolicy(len(action_names), 1, batch)
    return ScriptedPolicy(name, action_names, batch)


def evaluate(cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> dict[str, Any]:
    """Play this task's episodes with every policy; write results.json once all tasks are done."""
    from worldmodels.controller import controller_size
    from worldmodels.envs import EnvPool
    from worldmodels.evolution import load_world_model
    from worldmodels.rollout import play

    owned = task_episodes(cfg.evaluate.episodes, task, num_tasks)
    run_dir = rundir.prepare(run_dir, cfg)
    world = load_world_model(cfg, run_dir)
    size = controller_size(cfg.vae.z_size, world[1].hidden, world[1].actions)
    solution, source = controller_solution(cfg, run_dir, size)
    parts = {name: _load_part(_part_path(run_dir, name, task, num_tasks)) for name in POLICIES}
    scored = _scores(run_dir)  # from every task split: a rerun with other tasks plays only what is missing
    todo = {name: [k for k in owned if k not in scored[name]] for name in POLICIES}
    total = len(owned) * len(POLICIES)
    batches = {name: min(cfg.evaluate.batch, len(todo[name])) for name in POLICIES if todo[name]}
    envs = EnvPool(cfg.env)  # one set for every policy
    # every policy is made before any play: a game without the heuristics' actions fails at once
    policies = {name: _make_policy(name, solution, world, envs.take(1)[0].action_names, batch) for name, batch in batches.items()}
    with Tracker(cfg, run_dir, STAGE, total=total, done=total - sum(map(len, todo.values())), unit="episodes",
                 task=task if num_tasks > 1 else None) as tracker, StopFlag() as stop, torch.no_grad():
        for name, policy in policies.items():
            path = _part_path(run_dir, name, task, num_tasks)

            def done(played, name=name, path=path) -> None:
                parts[name][str(played.job.k)] = played.ret
                rundir.atomic_write(path, json.dumps(parts[name]).encode())
                tracker.advance(1, **{f"evaluate/{name}": played.ret})

            batch = batches[name]
            play(cfg.env, policy, [eval_job(cfg, k) for k in todo[name]], done, batch=batch, stop=stop, envs=envs.take(batch))
        if task == 0:
            record_videos(cfg, run_dir, solution, world, stop)
    results = assemble(cfg, run_dir, source)
    return {"episodes": len(owned), "results": results}


def _load_part(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _scores(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every episode score of every policy found in the parts, whichever task wrote it."""
    scores: dict[str, dict[int, float]] = {name: {} for name in POLICIES}
    for path in _parts_dir(run_dir).glob("*.json") if _parts_dir(run_dir).is_dir() else []:
        name = path.name.split(".task")[0]
        if name in scores:
            scores[name].update({int(k): v for k, v in _load_part(path).items()})
    return scores


def assemble(cfg: Config, run_dir: Path, source: Path) -> dict[str, Any] | None:
    """eval/results.json from every task's parts, once every episode of every policy is scored."""
    scores = _scores(run_dir)
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
               "seeds": [eval_seed(cfg, k) for k in wanted]}
    rundir.atomic_write(run_dir / "eval" / "results.json", json.dumps(results, indent=1).encode())
    from worldmodels.plots import plot_scores

    plot_scores(run_dir, results)
    return results


def record_videos(cfg: Config, run_dir: Path, solution: np.ndarray, world, stop=None) -> list[Path]:
    """eval/videos/controller-episode-K.mp4 for the first `evaluate.videos` evaluation episodes."""
    import gymnasium as gym

    from worldmodels.envs import AtariEnv
    from worldmodels.rollout import play

    folder = run_dir / "eval" / "videos"
    wanted = [k for k in range(min(cfg.evaluate.videos, cfg.evaluate.episodes))
              if not (folder / f"controller-episode-{k}.mp4").is_file()]
    for k in wanted:
        # each video is recorded in a folder of its own (RecordVideo warns about existing ones)
        # and moved into place when complete
        recording = folder / f".recording-{k}"
        shutil.rmtree(recording, ignore_errors=True)
        env = gym.wrappers.RecordVideo(AtariEnv(cfg.env, render_mode="rgb_array"), str(recording),
                                       episode_trigger=lambda i: True, name_prefix=f"controller-episode-{k}",
                                       disable_logger=True)
        try:
            play(cfg.env, _make_policy("controller", solution, world, [], 1), [eval_job(cfg, k)], lambda played: None,
                 batch=1, envs=[env], stop=stop)
        finally:
            env.close()
        (recording / f"controller-episode-{k}-episode-0.mp4").replace(folder / f"controller-episode-{k}.mp4")
        shutil.rmtree(recording)
    return sorted(folder.glob("*.mp4"))
