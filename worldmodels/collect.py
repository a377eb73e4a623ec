"""The collect stage: play episodes with a policy and commit each whole into data/rollouts.zarr.

Episode k belongs to task k % num_tasks, is seeded from (collect seed, k) and lands in its own slot
of the store, so the dataset is the same whatever the number of tasks, their order, or how often
they were interrupted: a rerun skips committed episodes and replays uncommitted ones from scratch.

Row t of an episode holds observation t and the transition that produced it: actions[t],
rewards[t], terminated[t] and truncated[t] belong to the step from observation t-1 to t (row 0,
the reset observation, has action 0 and reward 0). An episode of T steps has T + 1 rows.
"""

from __future__ import annotations

from pathlib import Path

from worldmodels import seeds
from worldmodels.config import Config
from worldmodels.dataset import EpisodeStore, Field, slot_rows
from worldmodels.distributed import task_episodes
from worldmodels.preemption import StopFlag
from worldmodels.rundir import RunDir
from worldmodels.tracking import Tracker

STAGE = "collect"


def rollout_fields(cfg: Config) -> dict[str, Field]:
    size = cfg.env.size
    return {
        "frames": Field("uint8", (size, size, 3)),
        "actions": Field("int64"),
        "rewards": Field("float32"),
        "terminated": Field("bool"),
        "truncated": Field("bool"),
    }


def open_rollouts(cfg: Config, run: RunDir) -> EpisodeStore:
    """The run's rollout store, created on first use with the layout `cfg` implies."""
    return EpisodeStore.create(
        run.rollouts, fields=rollout_fields(cfg), episodes=cfg.collect.episodes,
        slot=slot_rows(cfg.env.max_steps, cfg.collect.chunk_steps), chunk_steps=cfg.collect.chunk_steps,
        attrs={"env_id": cfg.env.id, "frame_skip": cfg.env.frame_skip, "noop_max": cfg.env.noop_max,
               "seed": cfg.seed_of("collect")},
    )


def check(cfg: Config, run: RunDir | None = None) -> None:
    """Refuse a bad env id or policy (a later round's: an unfinished previous round) before anything is written."""
    from worldmodels.envs import rom_of
    from worldmodels.policies import policy_factory

    rom_of(cfg.env.id)
    policy_factory(cfg, run)


def collect(cfg: Config, run_dir: str | Path, task: int = 0, num_tasks: int = 1) -> str:
    """Play and commit every uncommitted episode of this task; returns a line for people.

    Raises Interrupted (after committing whole episodes only) on SIGTERM/SIGUSR2.
    """
    from worldmodels.device import kernels_on, select_device
    from worldmodels.envs import EnvPool
    from worldmodels.policies import policy_factory
    from worldmodels.rollout import play

    owned = task_episodes(cfg.collect.episodes, task, num_tasks)
    run = RunDir(run_dir)
    check(cfg, run)
    make_policy = policy_factory(cfg, run)
    store = open_rollouts(cfg, run)
    lengths = store.lengths()
    todo = [k for k in owned if lengths[k] == 0]
    batch = max(1, min(cfg.collect.envs_per_task, len(todo)))
    envs = EnvPool(cfg.env).take(batch)
    policy = make_policy(cfg, envs[0].num_actions, batch)
    # after round 0 the previous round's V, M and C play: the episodes depend on the CPU kernels
    kernels = kernels_on(select_device(cfg.train.device)) if cfg.rounds.index > 0 else None
    with Tracker(cfg, run, STAGE, total=len(owned), done=len(owned) - len(todo), unit="episodes",
                 task=task if num_tasks > 1 else None, kernels=kernels) as tracker, StopFlag() as stop:

        def commit(played) -> None:
            store.write_episode(played.job.k, played.arrays(), ret=played.ret, seed=played.job.seed)
            tracker.advance(1, **{"episode/return": played.ret, "episode/length": played.steps})

        # an interrupted episode is dropped and replayed identically on the rerun
        play(cfg.env, policy, (collect_job(cfg, k) for k in todo), commit, batch=batch, record=True, stop=stop, envs=envs)
    return f"collect: {len(owned)} episodes in {store.path} ({len(todo)} collected now)"


def collect_job(cfg: Config, k: int):
    """Episode k of the dataset: its environment and its policy each draw from a stream of their own."""
    from worldmodels.rollout import Episode

    return Episode(k, seeds.seed(cfg, "collect.env", k), seeds.rng(cfg, "collect.policy", k))
