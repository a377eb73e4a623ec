import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, SMOKE
from worldmodels.dataset import EpisodeStore, Field, slot_rows
from worldmodels.errors import DataError

FIELDS = {"frames": Field("uint8", (8, 8, 3)), "actions": Field("int64"), "rewards": Field("float32")}


def fake_episode(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(k)
    length = int(rng.integers(1, 40))
    return {"frames": rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8),
            "actions": rng.integers(0, 6, length), "rewards": rng.normal(size=length).astype(np.float32)}


def make_store(path: Path) -> EpisodeStore:
    return EpisodeStore.create(path, fields=FIELDS, episodes=12, slot=slot_rows(39, 8), chunk_steps=8, attrs={"who": "test"})


def write_share(path: str, worker: int, workers: int) -> None:
    store = make_store(Path(path))  # every worker races to create the store, too
    for k in range(worker, 12, workers):
        store.write_episode(k, fake_episode(k), ret=float(k), seed=100 + k)


def test_four_processes_write_disjoint_episodes_into_one_store_at_once(tmp_path):
    path = tmp_path / "store.zarr"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=write_share, args=(str(path), w, 4)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = EpisodeStore.open(path)
    assert list(store.complete()) == list(range(12))
    index = store.index()
    for k in range(12):
        expected = fake_episode(k)
        got = store.read_episode(k)
        for name in FIELDS:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"episode {k} {name}")
        assert index["length"][k] == len(expected["actions"])
        assert index["start"][k] == k * store.slot and index["return"][k] == k and index["seed"][k] == 100 + k
    assert not list(tmp_path.glob(".store.zarr.tmp-*"))  # the losers of the creation race cleaned up


def test_an_episode_is_invisible_until_its_length_is_committed(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    data = fake_episode(3)
    store.array("frames")[3 * store.slot: 3 * store.slot + len(data["frames"])] = data["frames"]
    assert list(store.complete()) == []
    with pytest.raises(DataError, match="episode 3 has not been written"):
        store.read_episode(3)
    store.write_episode(3, data, ret=1.0, seed=1)
    assert list(store.complete()) == [3]


def test_no_two_episodes_share_a_chunk(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    for name in FIELDS:
        assert store.slot % store.array(name).chunks[0] == 0


def test_reopening_with_another_layout_is_refused(tmp_path):
    make_store(tmp_path / "s.zarr")
    with pytest.raises(DataError, match="another layout"):
        EpisodeStore.create(tmp_path / "s.zarr", fields=FIELDS, episodes=13, slot=slot_rows(39, 8), chunk_steps=8, attrs={})


def test_missing_and_foreign_stores_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no dataset"):
        EpisodeStore.open(tmp_path / "nothing.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    with pytest.raises(DataError, match="not a worldmodels episode dataset"):
        EpisodeStore.open(tmp_path / "other.zarr")


def test_a_corrupt_chunk_is_reported_with_its_array(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    store.write_episode(0, fake_episode(0), ret=0.0, seed=0)
    chunk = next((tmp_path / "s.zarr" / "frames" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="frames"):
        EpisodeStore.open(tmp_path / "s.zarr").read_episode(0)


def test_rollouts_are_readable_by_tensorstore_without_this_package(tmp_path):
    # The README promises that any Zarr v3 reader can use the dataset; tensorstore is one.
    import tensorstore as ts

    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    root = run / "data" / "rollouts.zarr"
    spec = lambda name: {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / name)}}
    length = ts.open(spec("episodes/length")).result().read().result()
    start = ts.open(spec("episodes/start")).result().read().result()
    frames = ts.open(spec("frames")).result()
    from worldmodels.dataset import EpisodeStore

    ours = EpisodeStore.open(root)
    for k in range(len(length)):
        assert length[k] > 0
        got = frames[start[k]: start[k] + length[k]].read().result()
        np.testing.assert_array_equal(got, ours.read_episode(k, ["frames"])["frames"])
