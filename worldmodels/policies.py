"""Policies that play episodes in batches: the random data-collection policy and the hook for others.

A policy sees a batch of observations from episodes that run in lockstep, one per slot (see
worldmodels.rollout). `begin(slot, job)` is called when a new episode starts in a slot (the job
carries that episode's own random stream, so its actions never depend on which other episodes
share the batch), `act(obs, slots)` returns one action per row, and `end(slot, played)` is
called when the episode in a slot is over. A trained controller plugs in here to collect
on-policy data (iterative training): register it in POLICIES under a name `collect.policy` takes.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from worldmodels.config import Config
from worldmodels.errors import ConfigError


class Policy(Protocol):
    def begin(self, slot: int, job) -> None:
        """A new episode (a worldmodels.rollout.Episode) starts in `slot`."""

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
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


PolicyFactory = Callable[[Config, int, int], Policy]  # (config, num_actions, batch) -> policy

POLICIES: dict[str, PolicyFactory] = {
    "random": lambda cfg, num_actions, batch: RandomRepeatPolicy(num_actions, cfg.collect.action_repeat_max, batch),
}


def policy_factory(cfg: Config) -> PolicyFactory:
    """The factory of the policy `collect.policy` names (checked before any work starts)."""
    try:
        return POLICIES[cfg.collect.policy]
    except KeyError:
        raise ConfigError(f"config key 'collect.policy': unknown policy '{cfg.collect.policy}' (known: {', '.join(POLICIES)})") from None
