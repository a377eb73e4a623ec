"""The evaluate stage: the controller and honest baselines on the same episodes, plus videos.

Every policy plays the same `evaluate.episodes` episodes (seeds drawn from `evaluate.seed`, on a
stream of their own) under every protocol of `evaluate.protocols` (config.PROTOCOLS: v4, and
sticky actions, whose repeats are drawn from the episode's seed too): the trained controller
(`evaluate.controller`: the best solution seen or the CMA-ES mean), the uniformly random policy,
and two heuristics that learn nothing (always FIRE; a left/right sweep while firing). A controller
that only learned to hold FIRE shows up as no better than the heuristic; one that memorised the
v4 protocol's few distinct games shows up under sticky actions.

Work is split into tasks owning disjoint episodes; each task keeps its scores in
eval/parts/PROTOCOL.POLICY.taskI-of-N.json, rewritten atomically after every episode, so a rerun
plays only what is missing. Whichever task finds every part complete writes eval/results.json.

The baselines learn nothing: their score on an episode depends only on the game, the episode's
seeds and the protocol, never on V, M or C. A branch, or a later round of iterative training,
takes them from the runs it builds on (the runs its stages are reused from; round 0) when those
played the same games (same environment and evaluation seed), instead of playing them again:
three quarters of an evaluation's episodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodels import seeds
from worldmodels.config import PROTOCOLS, Config, protocol_env
from worldmodels.distributed import task_episodes
from worldmodels.preemption import StopFlag
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.scores import by_policy, headline
from worldmodels.tracking import Tracker, log

STAGE = "evaluate"
POLICIES = ("controller", "random", "always_fire", "sweep_fire")


def eval_job(cfg: Config, k: int):
    """Evaluation episode k, the same game for every policy (the random one draws from its stream)."""
    from worldmodels.rollout import Episode

    return Episode(k, seeds.seed(cfg, "evaluate.env", k), seeds.rng(cfg, "evaluate.policy", k), tag=0)


def _part_path(run: RunDir, part: str, task: int, num_tasks: int) -> Path:
    return run.eval_parts / f"{part}.task{task}-of-{num_tasks}.json"


def _parts(cfg: Config) -> list[tuple[str, str, str]]:
    """(part name, protocol, policy) of every protocol and policy, in the order they are played."""
    return [(f"{protocol}.{name}", protocol, name) for protocol in cfg.evaluate.protocols for name in POLICIES]


def _make_policy(cfg: Config, name: str, solution: np.ndarray, world, action_names: list[str], batch: int):
    from worldmodels.controller import WorldModelPolicy
    from worldmodels.policies import RandomRepeatPolicy, ScriptedPolicy

    if name == "controller":
        vae, mdnrnn = world
        return WorldModelPolicy(vae, mdnrnn, torch.from_numpy(solution[None]), batch, cfg.controller.inputs)
    if name == "random":
        return RandomRepeatPolicy(len(action_names), 1, batch)
    return ScriptedPolicy(name, action_names, batch)


def evaluate(cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> str:
    """Play this task's episodes with every policy; write results.json once all tasks are done.
    Returns a line for people."""
    from worldmodels.controller import controller_size
    from worldmodels.device import kernels_on
    from worldmodels.envs import EnvPool
    from worldmodels.rollout import play, same_games

    owned = task_episodes(cfg.evaluate.episodes, task, num_tasks)
    run = RunDir(run_dir)
    world = run.load_world_model(cfg)
    size = controller_size(cfg.vae.z_size, world[1].hidden, world[1].actions, cfg.controller.inputs)
    solution, source = run.load_controller(cfg, size)
    parts = _parts(cfg)
    mine = {part: _load_part(_part_path(run, part, task, num_tasks)) for part, _, _ in parts}
    scored = _scores(run)  # from every task split: a rerun with other tasks plays only what is missing
    todo = {part: [k for k in owned if k not in scored.get(part, {})] for part, _, _ in parts}
    for part, found in _take_baselines(cfg, run, todo).items():  # this task's part holds them from now on
        mine[part].update({str(k): score for k, score in found.items()})
        atomic_write(_part_path(run, part, task, num_tasks), json.dumps(mine[part]).encode(), root=run.path)
        todo[part] = [k for k in todo[part] if k not in found]
    total = len(owned) * len(parts)
    # one policy per name for every protocol, batched for its largest share
    batches = {name: min(cfg.evaluate.batch, max(len(todo[part]) for part, _, n in parts if n == name)) for name in POLICIES}
    pools = {protocol: EnvPool(protocol_env(cfg, protocol)) for protocol in cfg.evaluate.protocols}
    action_names = next(iter(pools.values())).take(1)[0].action_names
    # every policy is made before any play: a game without the heuristics' actions fails at once
    policies = {name: _make_policy(cfg, name, solution, world, action_names, batch) for name, batch in batches.items() if batch}
    kernels = kernels_on(next(world[0].parameters()).device)
    with Tracker(cfg, run, STAGE, total=total, done=total - sum(map(len, todo.values())), unit="episodes",
                 task=task if num_tasks > 1 else None, kernels=kernels) as tracker, StopFlag() as stop, torch.no_grad():
        for part, protocol, name in parts:
            if not todo[part]:
                continue
            path = _part_path(run, part, task, num_tasks)
            env = pools[protocol]
            jobs = [eval_job(cfg, k) for k in todo[part]]
            # a policy that draws nothing plays one episode for all those of one game (under v4,
            # one a no-op start: at most 30 of 100)
            stochastic = getattr(policies[name], "stochastic", False)
            alike = {k: [k] for k in todo[part]} if stochastic else same_games(env.cfg, jobs)

            def done(played, part=part, path=path, alike=alike) -> None:
                same = alike[played.job.k]
                mine[part].update({str(k): played.ret for k in same})
                atomic_write(path, json.dumps(mine[part]).encode(), root=run.path)
                tracker.advance(len(same), **{f"evaluate/{part}": played.ret})

            jobs = [job for job in jobs if job.k in alike]
            batch = min(batches[name], len(jobs))
            play(env.cfg, policies[name], jobs, done, batch=batch, stop=stop, envs=env.take(batch))
        if task == 0:
            videos = record_videos(cfg, run, solution, world, stop)
            tracker.videos({f"{STAGE}/{path.stem}": (path, f"evaluation episode {path.stem.rsplit('-', 1)[1]}")
                            for path in videos})
        r = assemble(cfg, run, source)
        if r is not None:  # this task completed the results: it logs them
            tracker.images({f"{STAGE}/scores": run.report_dir / "eval-scores.png"})
            tracker.table(f"{STAGE}/episodes", ["protocol", "policy", "episode", "seed", "score"],
                          [[protocol, name, k, r["seeds"][k], score]
                           for protocol, block in r["protocols"].items() for name, scores in by_policy(block).items()
                           for k, score in enumerate(scores)])
    if r is None:
        return f"evaluate: {len(owned)} episodes scored; results.json waits for the other tasks"
    return f"evaluate: {headline(r)} -> {run.results_file}"


def _same_games(cfg: Config) -> dict[str, Any]:
    """What a baseline's scores depend on (the protocol sets the sticky actions; the evaluation's
    seeds are the same in every round, worldmodels.seeds.SAME_IN_EVERY_ROUND)."""
    import dataclasses

    return {"env": dataclasses.replace(cfg.env, repeat_action_probability=0.0), "seed": cfg.seed_of("evaluate")}


def _sources(cfg: Config, run: RunDir) -> list[RunDir]:
    """The runs this one builds on that may hold its baselines' scores: round 0 (for a later round),
    then every run a stage of this one is reused from."""
    from worldmodels.rounds import first_round
    from worldmodels.stages import STAGES

    paths = [first_round(run, cfg)] if cfg.rounds.index else []
    paths += [Path(record["reused_from"]) for name in STAGES if (record := run.stage_record(name)) and record.get("reused_from")]
    unique = dict.fromkeys(path.resolve() for path in paths if path.resolve() != run.path.resolve())
    return [RunDir(path) for path in unique]


def _take_baselines(cfg: Config, run: RunDir, wanted: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """{part: {episode: score}} of the baselines' `wanted` episodes already scored on the same games
    by a run this one builds on."""
    taken: dict[str, dict[int, float]] = {}
    for source in _sources(cfg, run):
        theirs = source.saved_config()
        if theirs is None or _same_games(theirs) != _same_games(cfg):
            continue
        scores, count = _scores(source), 0
        for part, _, name in _parts(cfg):
            found = {k: scores[part][k] for k in wanted[part]
                     if name != "controller" and k in scores.get(part, {}) and k not in taken.get(part, {})}
            taken.setdefault(part, {}).update(found)
            count += len(found)
        if count:
            log.info("evaluate: %d baseline episodes taken from %s (the same games)", count, source.path)
    return {part: found for part, found in taken.items() if found}


def _load_part(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _scores(run: RunDir) -> dict[str, dict[int, float]]:
    """Every episode score of every part (PROTOCOL.POLICY) found in the parts, whichever task wrote it."""
    scores: dict[str, dict[int, float]] = {}
    for path in run.eval_parts.glob("*.json") if run.eval_parts.is_dir() else []:
        scores.setdefault(path.name.split(".task")[0], {}).update({int(k): v for k, v in _load_part(path).items()})
    return scores


def assemble(cfg: Config, run: RunDir, source: Path) -> dict[str, Any] | None:
    """eval/results.json from every task's parts, once every episode of every part is scored.

    Under "protocols", each protocol's block: the controller's mean, std, distinct scores and
    episode scores, and those of "random" and the "heuristics". The first protocol's block is
    also at the top level (the headline that status, compare and the sweeps read)."""
    scores = _scores(run)
    wanted = range(cfg.evaluate.episodes)
    missing = {part: cfg.evaluate.episodes - len(set(scores.get(part, {})) & set(wanted)) for part, _, _ in _parts(cfg)}
    if any(missing.values()):
        log.info("evaluate: results.json waits for other tasks (missing episodes: %s)",
                 {part: n for part, n in missing.items() if n})
        return None

    def summary(part: str) -> dict[str, Any]:
        values = [scores[part][k] for k in wanted]
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "distinct": len(set(values)),
                "scores": values}

    blocks = {protocol: {"repeat_action_probability": PROTOCOLS[protocol], **summary(f"{protocol}.controller"),
                         "random": summary(f"{protocol}.random"),
                         "heuristics": {name: summary(f"{protocol}.{name}") for name in ("always_fire", "sweep_fire")}}
              for protocol in cfg.evaluate.protocols}
    first = cfg.evaluate.protocols[0]
    results = {"episodes": cfg.evaluate.episodes, "protocol": first, **blocks[first], "protocols": blocks,
               "controller": str(source), "which": cfg.evaluate.controller, "env_id": cfg.env.id,
               "seeds": [eval_job(cfg, k).seed for k in wanted]}
    atomic_write(run.results_file, json.dumps(results, indent=1).encode())
    from worldmodels.plots import plot_scores

    plot_scores(run, results)
    return results


def record_videos(cfg: Config, run: RunDir, solution: np.ndarray, world, stop=None) -> list[Path]:
    """eval/videos/controller-episode-K.mp4 for the first `evaluate.videos` evaluation episodes, under
    the first protocol (whose scores are the headline)."""
    from worldmodels.video import record_episode

    for k in range(min(cfg.evaluate.videos, cfg.evaluate.episodes)):
        path = run.videos / f"controller-episode-{k}.mp4"
        if not path.is_file():
            record_episode(protocol_env(cfg, cfg.evaluate.protocols[0]), _make_policy(cfg, "controller", solution, world, [], 1),
                           eval_job(cfg, k), path, stop)
    return sorted(run.videos.glob("*.mp4"))
