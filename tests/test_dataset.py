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


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_or_a_missing_chunk_is_an_error_naming_array_chunk_and_episode(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    for k in (0, 5):
        episode = fake_episode(k)
        episode["rewards"][:] = 0  # a chunk of zeros is stored too: its absence is damage, not zeros
        store.write_episode(k, episode, ret=0.0, seed=k)
    assert store.chunk_file("rewards", 5).is_file()
    flip_a_bit(store.chunk_file("frames", 5 * store.slot // store.array("frames").chunks[0]))  # in the compressed bytes
    store.chunk_file("rewards", 0).unlink()
    store = EpisodeStore.open(tmp_path / "s.zarr")
    with pytest.raises(DataError, match=r"/frames: chunk c/\d+/0/0/0 of episode 5 does not verify .*verify .* --repair"):
        store.read_episode(5)
    with pytest.raises(DataError, match="/rewards: chunk c/0 of episode 0 is missing"):
        store.read_episode(0, ["rewards"])
    assert store.read_episode(0, ["frames"])["frames"].shape[0] > 0  # undamaged arrays still read
    assert [(name, why.split()[0]) for name, _, why in store.damaged_chunks(5)] == [("frames", "does")]
    assert store.damaged_chunks(0) == [("rewards", 0, "is missing")]
    store.chunk_file("episodes/seed", 5).unlink()
    with pytest.raises(DataError, match="episodes/seed: chunk c/5 of episode 5 is missing"):
        store.index()
    store.uncommit(5)
    assert list(store.complete()) == [0]


def test_a_store_of_the_previous_format_is_refused_saying_why(tmp_path):
    import zarr

    make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["format"] = "worldmodels.episodes/2"
    with pytest.raises(DataError, match="format worldmodels.episodes/2.*no checksums.*collect it again"):
        EpisodeStore.open(tmp_path / "s.zarr")


def test_damage_in_a_real_run_stops_training_in_one_line_and_verify_repair_then_collect_restores_it(tmp_path):
    from conftest import assert_same_store
    import json
    import shutil

    good = tmp_path / "good"
    run_cli("collect", "--config", SMOKE, "--run-dir", good)
    run = tmp_path / "run"
    shutil.copytree(good, run)
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    flip_a_bit(store.chunk_file("frames", 0))  # episode 0: the first that train-vae reads
    store.chunk_file("rewards", 3 * store.slot // store.array("rewards").chunks[0]).unlink()
    proc = run_cli("train-vae", "--config", SMOKE, "--run-dir", run, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "rollouts.zarr/frames: chunk c/0/0/0/0 of episode 0 does not verify" in proc.stderr
    proc = run_cli("verify", run, check=False)
    assert proc.returncode == 1
    damaged = [line for line in proc.stdout.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 2 and "episode 0" in damaged[0] and "rewards: chunk c/3 of episode 3 is missing" in damaged[1]
    proc = run_cli("verify", run, "--repair")
    assert "rerun collect" in proc.stdout and "verify: sound (2 problems, repaired)" in proc.stdout
    status = json.loads(run_cli("status", run, "--json").stdout)["stages"]["collect"]
    assert status["episodes_done"] == 4 and status["state"] != "done"
    assert "(2 collected now)" in run_cli("collect", "--config", SMOKE, "--run-dir", run).stdout
    assert_same_store(good / "data" / "rollouts.zarr", run / "data" / "rollouts.zarr")
    assert run_cli("verify", run).stdout.strip().endswith("verify: sound (0 problems)")


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
