"""Play many episodes in lockstep: one batched policy call per step, whatever the policy.

Collection, controller fitness and evaluation all play episodes this way. Each episode is an
`Episode` job (its index, environment seed and private random stream); `play` keeps `batch`
environments busy, starting the next job in a slot as soon as its episode ends, and hands every
finished episode to `on_done`. An episode's outcome depends only on its job, never on which
slot or batch it ran in, so results do not depend on batch sizes or on how jobs were split
across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from worldmodels.config import EnvConfig


@dataclass
class Episode:
    """One episode to play: `k` names it, `seed` seeds the environment, `rng` the policy."""

    k: int
    seed: int
    rng: np.random.Generator
    tag: Any = None  # what the policy needs to know about this episode (e.g. its candidate)


@dataclass
class Played:
    """A finished episode: its job, score, steps, and (when recorded) its rows."""

    job: Episode
    ret: float = 0.0
    steps: int = 0
    rows: dict[str, list] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"frames": np.stack(self.rows["frames"]), **{k: np.asarray(v) for k, v in self.rows.items() if k != "frames"}}


def play(env_cfg: EnvConfig, policy, jobs: Iterable[Episode], on_done: Callable[[Played], None], *,
         batch: int, record: bool = False, stop=None, envs: list | None = None) -> None:
    """Play every job with `batch` environments in lockstep.

    With `record`, each Played carries its rows in the dataset convention: row t is
    observation t and the transition that led to it (row 0: action 0, reward 0).
    `stop.check()` runs before every step: an interrupted episode is simply dropped.
    """
    from worldmodels.envs import AtariEnv

    queue = iter(jobs)
    envs = envs or [AtariEnv(env_cfg) for _ in range(batch)]
    running: list[Played | None] = [None] * len(envs)
    obs_now: list[np.ndarray | None] = [None] * len(envs)

    def start(slot: int) -> None:
        job = next(queue, None)
        running[slot] = None
        if job is None:
            return
        obs, _ = envs[slot].reset(seed=job.seed)
        policy.begin(slot, job)
        running[slot] = Played(job)
        obs_now[slot] = obs
        if record:
            running[slot].rows = {"frames": [obs], "actions": [0], "rewards": [0.0], "terminated": [False], "truncated": [False]}

    for slot in range(len(envs)):
        start(slot)
    while True:
        slots = np.array([i for i, p in enumerate(running) if p is not None])
        if len(slots) == 0:
            return
        if stop is not None:
            stop.check()
        actions = policy.act(np.stack([obs_now[i] for i in slots]), slots)
        for slot, action in zip(slots.tolist(), actions.tolist()):
            obs, reward, terminated, truncated, _ = envs[slot].step(action)
            p = running[slot]
            p.ret += reward
            p.steps += 1
            obs_now[slot] = obs
            if record:
                for key, value in zip(("frames", "actions", "rewards", "terminated", "truncated"),
                                      (obs, action, reward, terminated, truncated)):
                    p.rows[key].append(value)
            if terminated or truncated:
                policy.end(slot, p)
                on_done(p)
                start(slot)
