"""Shuffled training batches from episode stores, in bounded memory, restartable at any batch.

Random access into a chunked store decodes a whole chunk per item (about 1k frames/s), so the
loaders read whole units (a frame chunk, an episode) and shuffle in memory instead:

- an epoch visits every unit once in an order drawn from (seed, epoch);
- consecutive units form blocks of `block_units`; the items of a block are shuffled together
  with a permutation drawn from (seed, epoch, block), so memory holds a few blocks, never the
  dataset;
- the stream of items is the concatenation of the blocks of epoch 0, 1, ...; batch s is items
  [s * batch, (s + 1) * batch) of it. Batch s is therefore a pure function of (seed, s): a
  restarted run asks for batch s and gets exactly what the interrupted one would have had.

Blocks are read ahead by `workers` threads (Zarr's decoders release the GIL). A block stays
a list of the arrays Zarr decoded (one per unit) and each batch gathers its rows from them:
concatenating or permuting whole blocks would add two full copies of every frame. Those arrays
are decoded into buffers that are reused once their block is consumed: fresh ones of a chunk's
size come from pages the allocator has just returned to the system, and faulting them in again
cost as much as decoding.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from worldmodels.dataset import EpisodeStore

Batch = dict[str, np.ndarray]
Empty = Callable[[tuple[int, ...], np.dtype], np.ndarray]


class BufferPool:
    """Arrays handed out per block and taken back, all of them, when the block is consumed."""

    def __init__(self):
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def lease(self) -> tuple[Empty, list[np.ndarray]]:
        """An `empty(shape, dtype)` for one block, and the list of what it handed out."""
        taken: list[np.ndarray] = []

        def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            key = (tuple(shape), np.dtype(dtype).str)
            with self._lock:
                free = self._free.get(key)
                array = free.pop() if free else np.empty(shape, dtype)
            taken.append(array)
            return array

        return empty, taken

    def give_back(self, arrays: list[np.ndarray]) -> None:
        with self._lock:
            for a in arrays:
                self._free.setdefault((a.shape, a.dtype.str), []).append(a)


class BlockShuffleLoader:
    """Batches of `batch_size` items from units of known sizes; see the module docstring.

    `read(units, empty)` returns one dict of arrays per unit, each with `sizes[unit]` rows. It may
    build them in arrays from `empty(shape, dtype)`, which are reused once the block is consumed.
    """

    def __init__(self, sizes: list[int], read: Callable[[list[int], Empty], list[Batch]], *, batch_size: int,
                 block_units: int, seed: int, workers: int = 1):
        if not sizes or sum(sizes) == 0:
            raise ValueError("nothing to load: the dataset has no items")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.read, self.batch_size, self.block_units = read, batch_size, block_units
        self.seed, self.workers = seed, max(1, workers)
        self.epoch_items = int(self.sizes.sum())

    def _blocks(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sizes))
        return [order[i:i + self.block_units] for i in range(0, len(order), self.block_units)]

    def _read_block(self, pool: BufferPool, epoch: int, b: int, units: np.ndarray):
        """The block's per-unit arrays, each item's (unit, row) in shuffled order, and the
        pool's buffers the arrays live in."""
        empty, buffers = pool.lease()
        parts = self.read(units.tolist(), empty)
        sizes = self.sizes[units]
        perm = np.random.default_rng([self.seed, epoch, b]).permutation(int(sizes.sum()))
        unit = np.searchsorted(np.cumsum(sizes), perm, side="right")
        return parts, unit, perm - (np.cumsum(sizes) - sizes)[unit], buffers

    def _position(self, start: int) -> tuple[int, int, int]:
        """(epoch, block, offset in block) of the first item of batch `start`."""
        epoch, skip = divmod(start * self.batch_size, self.epoch_items)
        for b, units in enumerate(self._blocks(epoch)):
            size = int(self.sizes[units].sum())
            if skip < size:
                return epoch, b, skip
            skip -= size
        raise AssertionError("unreachable: skip < epoch_items")

    def _schedule(self, epoch: int, block: int) -> Iterator[tuple[int, int, np.ndarray]]:
        while True:
            for b, units in enumerate(self._blocks(epoch)):
                if b >= block:
                    yield epoch, b, units
            epoch, block = epoch + 1, 0

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """Batches start, start + 1, ... forever."""
        epoch, block, offset = self._position(start)
        schedule = self._schedule(epoch, block)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="loader")
        buffers = BufferPool()
        try:
            pending = deque(pool.submit(self._read_block, buffers, *next(schedule)) for _ in range(self.workers))
            parts: list[Batch] = []
            have = 0
            while True:
                block, unit, row, used = pending.popleft().result()
                pending.append(pool.submit(self._read_block, buffers, *next(schedule)))
                n = len(unit)
                while offset < n:
                    take = min(self.batch_size - have, n - offset)
                    parts.append(_gather(block, unit[offset:offset + take], row[offset:offset + take]))
                    have, offset = have + take, offset + take
                    if have == self.batch_size:
                        yield parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                        parts, have = [], 0
                offset = 0
                buffers.give_back(used)  # every row of the block has been copied into a batch
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _gather(block: list[Batch], unit: np.ndarray, row: np.ndarray) -> Batch:
    """Rows `row` of units `unit` of a block, grouped by unit (one fancy-index copy per unit; the
    order inside a batch carries no meaning, only which items it holds)."""
    order = np.argsort(unit, kind="stable")
    unit, row = unit[order], row[order]
    bounds = np.flatnonzero(np.diff(unit)) + 1
    out = {k: np.empty((len(unit), *v.shape[1:]), v.dtype) for k, v in block[0].items()}
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(unit)]])):
        for k, v in out.items():
            np.take(block[unit[lo]][k], row[lo:hi], axis=0, out=v[lo:hi])
    return out


def frame_loader(stores: list[EpisodeStore], *, batch_size: int, block_units: int, seed: int,
                 workers: int = 1) -> BlockShuffleLoader:
    """Shuffled batches {"frames": uint8 [B, H, W, 3]} from the frames of `stores`, read one whole chunk at a time."""
    frames = stores[0].array("frames")
    chunk = frames.chunks[0]
    units: list[tuple[EpisodeStore, int, int, int]] = []  # (store, episode, first row, rows) of every stored chunk
    for store in stores:
        lengths = store.lengths()
        for k in np.flatnonzero(lengths > 0):
            start, length = int(k) * store.slot, int(lengths[k])
            units += [(store, int(k), start + c, min(chunk, length - c)) for c in range(0, length, chunk)]

    def read(selected: list[int], empty: Empty) -> list[Batch]:
        parts = []
        for u in selected:
            store, episode, first, rows = units[u]
            out = empty((chunk, *frames.shape[1:]), frames.dtype)[:rows]
            parts.append({"frames": store.read_rows_into("frames", first, out, episode)})
        return parts

    return BlockShuffleLoader([unit[-1] for unit in units], read, batch_size=batch_size, block_units=block_units,
                              seed=seed, workers=workers)


def sequence_loader(store: EpisodeStore, *, seq_len: int, batch_size: int, block_units: int, seed: int,
                    workers: int = 1) -> BlockShuffleLoader:
    """Shuffled batches of latent windows, read one whole episode at a time.

    An episode of L rows gives ceil((L - 1) / seq_len) windows of seq_len + 1 rows (consecutive
    windows share one row, so every transition is a target exactly once). Each batch holds
    mu, logvar [B, T + 1, z]; actions, rewards, terminated [B, T + 1]; and mask [B, T], which is
    False for the padding after an episode's end.
    """
    lengths = store.lengths()
    episodes = [int(k) for k in np.flatnonzero(lengths > 1)]
    T = seq_len

    def read(selected: list[int], empty: Empty) -> list[Batch]:
        blocks = []
        for u in selected:
            out: dict[str, list[np.ndarray]] = {"mu": [], "logvar": [], "actions": [], "rewards": [], "terminated": [], "mask": []}
            ep = store.read_episode(episodes[u], ["mu", "logvar", "actions", "rewards", "terminated"])
            L = len(ep["actions"])
            for start in range(0, L - 1, T):
                rows = min(T + 1, L - start)
                for name in ("mu", "logvar", "actions", "rewards", "terminated"):
                    window = np.zeros((T + 1, *ep[name].shape[1:]), ep[name].dtype)
                    window[:rows] = ep[name][start:start + rows]
                    out[name].append(window)
                mask = np.zeros(T, bool)
                mask[: rows - 1] = True
                out["mask"].append(mask)
            blocks.append({name: np.stack(values) for name, values in out.items()})
        return blocks

    sizes = [-(-(int(lengths[k]) - 1) // T) for k in episodes]
    return BlockShuffleLoader(sizes, read, batch_size=batch_size, block_units=block_units, seed=seed, workers=workers)
