"""Play many episodes in lockstep: one batched policy call per step, whatever the policy.

Collection, controller fitness and evaluation all play episodes this way. Each episode is an
`Episode` job (its index, environment seed and private random stream); `play` keeps `batch`
environments busy, starting the next job in a slot as soon as its episode ends, and hands every
finished episode to `on_done`. An episode's outcome depends only on its job, never on which
slot or batch it ran in, so results do not depend on batch sizes or on how jobs were split
across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from worldmodels.config import EnvConfig


@dataclass
class Episode:
    """One episode to play: `k` names it, `seed` seeds the environment, `rng` the policy (if it draws)."""

    k: int
    seed: int
    rng: np.random.Generator | None = None
    tag: Any = None  # what the policy needs to know about this episode (e.g. its candidate)


def same_games(env_cfg: EnvConfig, jobs: list[Episode]) -> dict[int, list[int]]:
    """{job to play: the jobs it scores, itself first} for a policy that draws no random numbers.

    Such a policy plays the same game in episodes of one tag (one controller) that the emulator
    cannot tell apart (worldmodels.envs.game_of_seed: under the v4 protocol, those with the same
    no-op frames), so one of them is played for all; without sticky actions a controller plays
    at most noop_max different games."""
    from worldmodels.envs import game_of_seed

    games: dict[tuple, list[int]] = {}
    for job in jobs:
        game = game_of_seed(env_cfg, job.seed)
        games.setdefault((job.tag, job.k if game is None else game), []).append(job.k)
    return {same[0]: same for same in games.values()}


class Rows:
    """A recorded episode's rows in the dataset convention (see `play`).

    Each frame is copied straight into one preallocated array (doubled when full) and the
    finished episode is handed over as a slice of it, instead of a list of per-step frames
    stacked at the end, which cost a second copy of every frame. `play` passes the array of a
    finished episode on to the next one: fresh memory costs a page fault per 4 KiB.
    """

    def __init__(self, obs: np.ndarray, frames: np.ndarray | None = None, capacity: int = 1024):  # 12 MiB of 64x64 frames: most episodes fit
        self.frames = np.empty((capacity, *obs.shape), obs.dtype) if frames is None else frames
        self.frames[0] = obs
        self.length = 1
        self.actions, self.rewards, self.terminated, self.truncated = [0], [0.0], [False], [False]

    def add(self, obs: np.ndarray, action: int, reward: float, terminated: bool, truncated: bool) -> None:
        if self.length == len(self.frames):
            self.frames = np.concatenate([self.frames, np.empty_like(self.frames)])
        self.frames[self.length] = obs
        self.length += 1
        self.actions.append(action)
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"frames": self.frames[:self.length], "actions": np.asarray(self.actions), "rewards": np.asarray(self.rewards),
                "terminated": np.asarray(self.terminated), "truncated": np.asarray(self.truncated)}


@dataclass
class Played:
    """A finished episode: its job, score, steps, and (when recorded) its rows."""

    job: Episode
    ret: float = 0.0
    steps: int = 0
    rows: Rows | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return self.rows.arrays()


def play(env_cfg: EnvConfig, policy, jobs: Iterable[Episode], on_done: Callable[[Played], None], *,
         batch: int, record: bool = False, stop=None, envs: list | None = None) -> None:
    """Play every job with `batch` environments in lockstep (the given `envs`, when passed).

    With `record`, each Played carries its rows in the dataset convention: row t is
    observation t and the transition that led to it (row 0: action 0, reward 0); their arrays
    are reused once `on_done` returns, so it must copy (or store) what it keeps.
    `stop.check()` runs before every step: an interrupted episode is simply dropped.
    A policy that is `blind` (it ignores the screen) gets None for observations, and unless
    episodes are recorded, the environments skip making them.
    """
    from worldmodels.envs import EnvPool

    queue = iter(jobs)
    if envs is None:
        envs = EnvPool(env_cfg).take(batch)
    if not envs:
        raise ValueError("play needs at least one environment")
    running: list[Played | None] = [None] * len(envs)
    # Every slot's current observation, in place: the policy gets this batch (or the rows of the
    # slots still running) without restacking per-step arrays. Valid only during its act() call.
    obs_now = np.zeros((len(envs), *envs[0].observation_space.shape), envs[0].observation_space.dtype)
    spare: list[np.ndarray] = []  # frame arrays of finished episodes' rows, for the next ones
    blind = getattr(policy, "blind", False)
    observe = record or not blind

    def start(slot: int) -> None:
        job = next(queue, None)
        running[slot] = None
        if job is None:
            return
        obs, _ = envs[slot].reset(seed=job.seed)
        policy.begin(slot, job)
        running[slot] = Played(job, rows=Rows(obs, spare.pop() if spare else None) if record else None)
        obs_now[slot] = obs

    for slot in range(len(envs)):
        start(slot)
    slots = np.flatnonzero([p is not None for p in running])
    while len(slots):
        if stop is not None:
            stop.check()
        actions = policy.act(None if blind else obs_now if len(slots) == len(envs) else obs_now[slots], slots)
        ended = False
        for slot, action in zip(slots.tolist(), actions.tolist()):
            env = envs[slot]  # (gymnasium wrappers, as for videos, know no `observe`)
            obs, reward, terminated, truncated, _ = env.step(action) if observe else env.step(action, observe=False)
            p = running[slot]
            p.ret += reward
            p.steps += 1
            if observe:
                obs_now[slot] = obs
            if record:
                p.rows.add(obs, action, reward, terminated, truncated)
            if terminated or truncated:
                policy.end(slot, p)
                on_done(p)
                if record:
                    spare.append(p.rows.frames)
                start(slot)
                ended = True
        if ended:
            slots = np.flatnonzero([p is not None for p in running])
