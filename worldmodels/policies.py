"""Policies that play episodes in batches: the random data-collection policy and the hook for others.

A policy sees a batch of observations from episodes that run in lockstep, one per slot.
`begin(slot, rng)` is called when a new episode starts in a slot (with that episode's own random
stream, so an episode's actions never depend on which other episodes share the batch), and
`act(obs, slots)` returns one action per row. A trained controller plugs in here to collect
on-policy data (iterative training): register it in POLICIES under a name `collect.policy` takes.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from worldmodels.config import Config
from worldmodels.errors import ConfigError


class Policy(Protocol):
    def begin(self, slot: int, rng: np.random.Generator) -> None:
        """A new episode starts in `slot`; `rng` is its private random stream."""

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Actions (int64 [B]) for observations uint8 [B, H, W, 3] of the episodes in `slots`."""


class RandomRepeatPolicy:
    """Uniform random actions, each held for a uniform 1..repeat_max steps (as the paper's Doom data)."""

    def __init__(self, num_actions: int, repeat_max: int, batch: int):
        self.num_actions = num_actions
        self.repeat_max = repeat_max
        self._rngs: list[np.random.Generator | None] = [None] * batch
        self._action = np.zeros(batch, dtype=np.int64)
        self._left = np.zeros(batch, dtype=np.int64)

    def begin(self, slot: int, rng: np.random.Generator) -> None:
        self._rngs[slot] = rng
        self._left[slot] = 0

    def act(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        for slot in slots:
            if self._left[slot] == 0:
                rng = self._rngs[slot]
                self._action[slot] = rng.integers(self.num_actions)
                self._left[slot] = rng.integers(1, self.repeat_max + 1)
            self._left[slot] -= 1
        return self._action[slots].copy()


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
