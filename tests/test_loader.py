import numpy as np
import pytest

from worldmodels.loader import BlockShuffleLoader, frame_loader, sequence_loader
from worldmodels.dataset import EpisodeStore, Field


def toy(sizes, **kw):
    """A loader over items 0, 1, ... in units of `sizes`, recording each read and every buffer used."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    calls, buffers = [], {}

    def read(units, empty):
        calls.append(list(units))
        parts = []
        for u in units:
            buffer = empty((max(sizes),), np.int64)  # one size for all units, as for chunks
            buffers[id(buffer)] = buffer
            buffer[: sizes[u]] = np.arange(offsets[u], offsets[u + 1])
            parts.append({"x": buffer[: sizes[u]]})
        return parts

    loader = BlockShuffleLoader(list(sizes), read, **kw)
    loader.buffers = buffers
    return loader, calls


def take(loader, n, start=0):
    it = loader.batches(start)
    return [next(it)["x"] for _ in range(n)]


def test_an_epoch_delivers_every_item_exactly_once_in_shuffled_order():
    loader, _ = toy([5, 3, 8, 1, 7, 4], batch_size=4, block_units=2, seed=0)
    epoch = np.concatenate(take(loader, 7))  # 28 items = one epoch
    assert sorted(epoch) == list(range(28))
    assert not np.array_equal(epoch, np.arange(28))
    second = np.concatenate(take(loader, 7, start=7))
    assert sorted(second) == list(range(28)) and not np.array_equal(epoch, second)


def test_same_seed_same_batches_other_seed_other_batches():
    a = take(toy([9] * 6, batch_size=5, block_units=2, seed=1)[0], 20)
    b = take(toy([9] * 6, batch_size=5, block_units=2, seed=1, workers=3)[0], 20)
    c = take(toy([9] * 6, batch_size=5, block_units=2, seed=2)[0], 20)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("start", [0, 1, 6, 7, 13, 29])
def test_restarting_at_any_batch_gives_exactly_the_batches_of_an_uninterrupted_stream(start):
    loader, _ = toy([5, 3, 8, 1, 7, 4], batch_size=4, block_units=2, seed=5)
    whole = take(loader, 40)
    resumed = take(loader, 40 - start, start=start)
    for s, batch in enumerate(resumed, start):
        np.testing.assert_array_equal(batch, whole[s])


def test_memory_is_bounded_by_the_block_size():
    loader, calls = toy([10] * 100, batch_size=8, block_units=3, seed=0, workers=2)
    batches = take(loader, 200)  # 1600 items: over 50 blocks
    assert max(len(c) for c in calls) <= 3
    # read buffers are reused: the block being consumed and the two read ahead, 3 units each
    assert len(loader.buffers) <= 9
    # and reusing them never changed a batch already delivered
    whole = np.concatenate(batches)
    assert sorted(whole[:1000]) == list(range(1000))
    alone = take(toy([10] * 100, batch_size=8, block_units=3, seed=0, workers=1)[0], 200)
    np.testing.assert_array_equal(whole, np.concatenate(alone))


def make_latents(tmp_path, lengths, z=2):
    fields = {"mu": Field("float32", (z,)), "logvar": Field("float32", (z,)), "actions": Field("int64"),
              "rewards": Field("float32"), "terminated": Field("bool")}
    store = EpisodeStore.create(tmp_path / "l.zarr", fields=fields, episodes=len(lengths), slot=16, chunk_steps=16, attrs={})
    for k, n in enumerate(lengths):
        rows = np.arange(n, dtype=np.float32) + 100 * k
        store.write_episode(k, {"mu": np.stack([rows] * z, 1), "logvar": np.zeros((n, z), np.float32),
                                "actions": np.arange(n) % 6, "rewards": rows, "terminated": np.arange(n) == n - 1},
                            ret=0.0, seed=k)
    return store


def test_sequence_windows_cover_every_transition_once_and_mask_the_padding(tmp_path):
    store = make_latents(tmp_path, [11, 4, 7])  # 10 + 3 + 6 = 19 transitions
    loader = sequence_loader(store, seq_len=4, batch_size=1, block_units=2, seed=0)
    windows = [next(loader.batches(s)) for s in range(loader.epoch_items)]
    targets = []
    for w in windows:
        mask = w["mask"][0]
        assert w["mu"].shape == (1, 5, 2) and mask.shape == (4,)
        mu = w["mu"][0, :, 0]
        valid = int(mask.sum())
        assert mask[:valid].all() and not mask[valid:].any()
        assert np.all(np.diff(mu[: valid + 1]) == 1)  # consecutive rows of one episode
        targets += list(mu[1: valid + 1])
    assert sorted(targets) == sorted([100 * k + t for k, n in enumerate([11, 4, 7]) for t in range(1, n)])


def test_frame_loader_reads_whole_chunks_of_the_store(tmp_path):
    fields = {"frames": Field("uint8", (20, 20, 3))}  # rows over 1 KiB are chunked by chunk_steps
    store = EpisodeStore.create(tmp_path / "f.zarr", fields=fields, episodes=3, slot=8, chunk_steps=4, attrs={})
    for k, n in enumerate([6, 8, 3]):
        frames = np.zeros((n, 20, 20, 3), np.uint8) + (10 * k + np.arange(n, dtype=np.uint8))[:, None, None, None]
        store.write_episode(k, {"frames": frames}, ret=0.0, seed=k)
    loader = frame_loader([store], batch_size=17, block_units=2, seed=0)
    assert list(loader.sizes) == [4, 2, 4, 4, 3]
    batch = next(loader.batches(0))["frames"][:, 0, 0, 0]
    assert sorted(batch) == sorted([10 * k + t for k, n in enumerate([6, 8, 3]) for t in range(n)])
