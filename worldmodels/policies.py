"""Policies that play episodes in batches: the random data-collection policy and the hook for others.

A policy sees a batch of observations from episodes that run in lockstep, one per slot (see
worldmodels.rollout). `begin(slot, job)` is called when a new episode starts in a slot (the job
carries that episode's own random stream, so its actions never depend on which other episodes
share the batch), `act(obs, slots)` returns one action per row, and `end(slot, played)` is
called when the episode in a slot is over. Round 0 collects with the policy `collect.policy`
names (POLICIES); later rounds (worldmodels.rounds) with the previous round's controller, exploring.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from worldmodels.config import Config
from worldmodels.errors import ConfigError
from worldmodels.rundir import RunDir


class Policy(Protocol):
    def begin(self, slot: int, job) -> None:
        """A new episode (a worldmodels.rollout.Episode) starts in `slot`."""

    blind: bool = False  # true for a policy that never looks at `obs`: play then gives it None
    # true for a policy that draws random numbers: two of its episodes of one game may differ
    # (otherwise one is played for all, worldmodels.rollout.same_games)
    stochastic: bool = False

    def act(self, obs: np.ndarray | None, slots: np.ndarray) -> np.ndarray:
        """Actions (int64 [B]) for observations uint8 [B, H, W, 3] of the episodes in `slots`.

        `obs` is reused by the next step: copy what must outlive the call."""

    def end(self, slot: int, played) -> None:
        """The episode in `slot` is over."""


class FixedPolicy:
    """Base of policies that need no hook at the end of an episode: no-op `begin` and `end`."""

    def begin(self, slot: int, job) -> None:
        pass

    def end(self, slot: int, played) -> None:
        pass


class ScriptedPolicy(FixedPolicy):
    """Heuristics that need no learning, as honest baselines: a cycle of (action, steps) pairs.

    `always_fire` holds FIRE (285 on every Space Invaders seed); `sweep_fire` moves right then
    left while firing, 30 steps each way (302 over the demo's 100 evaluation seeds).
    """

    SCRIPTS = {"always_fire": [("FIRE", 1)], "sweep_fire": [("RIGHTFIRE", 30), ("LEFTFIRE", 30)]}

    blind = True  # the script is all it follows

    def __init__(self, name: str, action_names: list[str], batch: int):
        missing = [action for action, _ in self.SCRIPTS[name] if action not in action_names]
        if missing:
            raise ConfigError(f"the {name} baseline needs {', '.join(missing)}, which this game's actions "
                              f"({', '.join(action_names)}) lack")
        script = [(action_names.index(action), steps) for action, steps in self.SCRIPTS[name]]
        self._cycle = np.concatenate([[a] * n for a, n in script]).astype(np.int64)
        self._t = np.zeros(batch, dtype=np.int64)

    def begin(self, slot: int, job) -> None:
        self._t[slot] = 0

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        actions = self._cycle[self._t[slots] % len(self._cycle)]
        self._t[slots] += 1
        return actions


class RandomRepeatPolicy(FixedPolicy):
    """Uniform random actions, each held for a uniform 1..repeat_max steps (as the paper's Doom data)."""

    blind = True  # its own draws are all it follows
    stochastic = True

    def __init__(self, num_actions: int, repeat_max: int, batch: int):
        self.num_actions = num_actions
        self.repeat_max = repeat_max
        self._rngs: list[np.random.Generator | None] = [None] * batch
        self._action = [0] * batch  # plain lists: per-element numpy access costs more than the draw
        self._left = [0] * batch

    def begin(self, slot: int, job) -> None:
        self._rngs[slot] = job.rng
        self._left[slot] = 0

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        for slot in slots.tolist():
            if self._left[slot] == 0:
                rng = self._rngs[slot]
                self._action[slot] = int(rng.integers(self.num_actions))
                self._left[slot] = int(rng.integers(1, self.repeat_max + 1))
            self._left[slot] -= 1
        return np.array([self._action[slot] for slot in slots.tolist()], dtype=np.int64)


class ExploringPolicy:
    """A trained controller that hands over to random actions now and then: at each step where no
    random action is held, with probability `explore`, a uniform action held for 1..repeat_max steps
    (as the random policy's). The draws come from the episode's own stream, so an episode is the
    same whatever shares its batch; M folds in the action actually taken."""

    def __init__(self, controller, num_actions: int, explore: float, repeat_max: int, batch: int):
        self.controller, self.num_actions, self.explore, self.repeat_max = controller, num_actions, explore, repeat_max
        self._rngs: list[np.random.Generator | None] = [None] * batch
        self._action = [0] * batch
        self._left = [0] * batch

    def begin(self, slot: int, job) -> None:
        self.controller.begin(slot, dataclasses.replace(job, tag=0))  # the one controller there is
        self._rngs[slot] = job.rng
        self._left[slot] = 0

    def end(self, slot: int, played) -> None:
        pass

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        return self.controller.act(obs, slots, replace=lambda actions: self._explore(actions, slots))

    def _explore(self, actions: np.ndarray, slots: np.ndarray) -> np.ndarray:
        out = actions.copy()
        for i, slot in enumerate(slots.tolist()):
            rng = self._rngs[slot]
            if self._left[slot] == 0 and rng.random() < self.explore:
                self._action[slot] = int(rng.integers(self.num_actions))
                self._left[slot] = int(rng.integers(1, self.repeat_max + 1))
            if self._left[slot] > 0:
                out[i] = self._action[slot]
                self._left[slot] -= 1
        return out


PolicyFactory = Callable[[Config, int, int], Policy]  # (config, num_actions, batch) -> policy

POLICIES: dict[str, PolicyFactory] = {
    "random": lambda cfg, num_actions, batch: RandomRepeatPolicy(num_actions, cfg.collect.action_repeat_max, batch),
}


def policy_factory(cfg: Config, run: RunDir | None = None) -> PolicyFactory:
    """The factory of the policy that collects, checked before any work starts: `collect.policy`'s
    in round 0; after it, the previous round's controller (worldmodels.rounds), found from `run`."""
    if cfg.rounds.index > 0:
        from worldmodels.rounds import collecting_policy, previous

        if run is not None:
            previous(run, cfg)
        return lambda cfg, num_actions, batch: collecting_policy(cfg, run, num_actions, batch)
    try:
        return POLICIES[cfg.collect.policy]
    except KeyError:
        raise ConfigError(f"config key 'collect.policy': unknown policy '{cfg.collect.policy}' (known: {', '.join(POLICIES)})") from None
