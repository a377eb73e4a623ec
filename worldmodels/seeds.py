"""Every random stream of a run, named in one place.

A stream is drawn from its section's seed (`controller.seed`, ..., the run seed by default), the
stream's own number and its indices (an episode, a generation, a rollout), as numpy's
`SeedSequence(seed, spawn_key=(number, *indices))`. Distinct numbers keep every stream apart from
every other, whatever the indices: a model's initialisation never shares a seed with an episode,
and run 0's evaluation never replays run 20's collection. A stage's seed can therefore change
without touching its upstream: a sweep over `controller.seed` reuses one V and M.

Round k >= 1 of iterative training (worldmodels.rounds) draws every stream at (number, *indices, k),
so each round collects new games and trains on its own batches; the evaluation's streams are the
same in every round, so that every round's controller plays the same episodes.

Changing a number changes every artifact drawn from it, so numbers are never reused or renumbered;
the dataset format version (worldmodels.dataset.FORMAT) records which scheme made a store.
"""

from __future__ import annotations

import numpy as np

from worldmodels.config import Config

# name: (number, what the indices are). The section a stream draws from is the name's first part.
STREAMS: dict[str, tuple[int, tuple[str, ...]]] = {
    "collect.env": (1, ("episode",)),  # the no-op start of dataset episode k
    "collect.policy": (2, ("episode",)),  # the behaviour policy's draws in dataset episode k
    "vae.init": (3, ()),  # V's initial weights, then its training noise (torch's generator)
    "vae.batches": (4, ()),  # the order V's loader visits the frames in
    "mdnrnn.init": (5, ()),  # M's initial weights, then its training noise
    "mdnrnn.batches": (6, ()),  # the order M's loader visits the episodes in
    "mdnrnn.dreams": (7, ()),  # the dreams train-mdnrnn draws for the report
    "controller.cma": (8, ()),  # CMA-ES's own sampler
    "controller.train": (9, ("generation", "rollout")),  # the games every candidate of a generation plays
    "controller.rescore": (10, ("generation", "rollout")),  # the games the re-scored mean plays
    "controller.dream": (11, ("generation",)),  # every draw of a generation's dreams
    "evaluate.env": (12, ("episode",)),  # the no-op start of evaluation episode k
    "evaluate.policy": (13, ("episode",)),  # the random baseline's draws in evaluation episode k
    "controller.select": (14, ("generation", "rollout")),  # the games the top candidates play after the last generation
}


SAME_IN_EVERY_ROUND = ("evaluate.env", "evaluate.policy")


def _sequence(cfg: Config, stream: str, index: tuple[int, ...]) -> np.random.SeedSequence:
    number, names = STREAMS[stream]
    if len(index) != len(names):
        raise TypeError(f"stream {stream} takes {len(names)} indices ({', '.join(names) or 'none'}), got {len(index)}")
    key = (number, *map(int, index))
    if cfg.rounds.index and stream not in SAME_IN_EVERY_ROUND:  # one key longer than round 0's: never the same
        key += (cfg.rounds.index,)
    return np.random.SeedSequence(cfg.seed_of(stream.split(".")[0]), spawn_key=key)


def seed(cfg: Config, stream: str, *index: int) -> int:
    """A 32-bit seed from `stream` at `index` (for an environment, torch or cma)."""
    return int(_sequence(cfg, stream, index).generate_state(1, np.uint32)[0])


def rng(cfg: Config, stream: str, *index: int) -> np.random.Generator:
    """A numpy generator on `stream` at `index`."""
    return np.random.Generator(np.random.PCG64(_sequence(cfg, stream, index)))
