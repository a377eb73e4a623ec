"""What the file system and other processes do to a run: a second copy of a stage, a holder that
died, a full disk, a read-only or vanished run directory, a chunk damaged under a training stage.
Real processes on real (small tmpfs) file systems; the tmpfs mounts need root, as CI has."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SMOKE, assert_same_store, cli_env, committed, run_cli, start_cli, wait_for
from worldmodels import config, identity, lease
from worldmodels.checkpoint import Checkpointer
from worldmodels.dataset import EpisodeStore, Field
from worldmodels.errors import ConfigError, StorageError
from worldmodels.files import atomic_write
from worldmodels.rundir import RunDir
from worldmodels.zarr_internals import ChunkWriter

LONG_COLLECT = ["collect.episodes=20", "env.max_steps=300"]  # about 7 MB of rollouts, 8 s


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The rollouts of LONG_COLLECT, collected without any fault: what every faulted run must end with."""
    run = tmp_path_factory.mktemp("whole") / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run, *LONG_COLLECT)
    return run / "data" / "rollouts.zarr"


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs of a given size in MB, unmounted after the test."""
    mounts = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


# --- one writer per stage -----------------------------------------------------------------------


def test_a_second_copy_of_a_running_stage_is_refused_naming_its_holder_and_a_killed_one_is_taken_over(tmp_path, whole):
    run = tmp_path / "run"
    args = ["collect", "--config", SMOKE, "--run-dir", run, *LONG_COLLECT]
    first = start_cli(*args)
    wait_for(lambda: committed(run) >= 1, 120, "an episode", proc=first, every=0.05)
    error = one_error_line(run_cli(*args, check=False))
    assert "collect is already running" in error and f"pid {first.pid}" in error and f"host {os.uname().nodename}" in error
    error = one_error_line(run_cli("verify", run, "--repair", check=False))  # nor is a running stage repaired
    assert error.startswith("error: collect is running") and f"pid {first.pid}" in error
    first.kill()  # SIGKILL: its lease stays behind, naming a process that is gone
    first.wait()
    assert (run / "state" / "collect.lease").is_file()
    proc = run_cli(*args)
    assert "taking over the lease" in proc.stderr and "its process is gone" in proc.stderr
    assert not (run / "state" / "collect.lease").exists()  # released at the end
    assert_same_store(whole, run / "data" / "rollouts.zarr")


def run_files(run: Path) -> dict[str, bytes]:
    """The run's config and stage records, byte for byte."""
    return {p.name: p.read_bytes() for p in [run / "config.yaml", *sorted((run / "stages").glob("*.json"))]}


def test_a_refused_second_copy_changes_nothing_and_one_with_other_values_is_refused_while_the_stage_runs(tmp_path):
    run = tmp_path / "run"
    args = ["collect", "--config", SMOKE, "--run-dir", run, "collect.episodes=60", "env.max_steps=300"]
    first = start_cli(*args)
    # begin writes the stage records, then config.yaml: wait for all three
    wait_for(lambda: all((run / name).is_file() for name in ("state/collect.lease", "stages/collect.json", "config.yaml")),
             120, "the stage's records", proc=first, every=0.05)
    before = run_files(run)
    # other values for the running stage, whether or not it has made anything yet
    error = one_error_line(run_cli(*args, "collect.episodes=61", check=False))
    assert "collect is running in" in error and f"pid {first.pid}" in error and "collect.episodes: 60 -> 61" in error
    # the same identity with another value for a later stage: the lease refuses it, before config.yaml takes it
    error = one_error_line(run_cli(*args, "vae.lr=0.0005", check=False))
    assert "collect is already running" in error
    # nor may a submission (which records every stage's identity without running one) record other values for it
    with pytest.raises(ConfigError, match="collect is running in"):
        identity.begin(config.load(SMOKE, ["collect.episodes=61", "env.max_steps=300"]), run, "report")
    assert first.poll() is None, "the first copy ended before the others were refused: make it longer"
    assert run_files(run) == before
    first.kill()
    first.wait()


def test_tasks_of_one_stage_starting_together_with_new_values_do_not_refuse_each_other(tmp_path):
    """Task 1 holds its lease with the new values but has not yet recorded them (the record still says
    the old ones, which made nothing): task 0 goes on, as it would alone."""
    run = tmp_path / "run"
    new = ["collect.episodes=4", "env.max_steps=100"]
    identity.begin(config.load(SMOKE, ["collect.episodes=5", "env.max_steps=100"]), run, "collect")
    sibling = holding_a_lease(run / "state" / "collect.task1.lease",
                              identity.digest(identity.identity(config.load(SMOKE, new), "collect")))
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", run, *new, "--task", "0", "--num-tasks", "2")
    assert "2 collected now" in proc.stdout, proc.stdout + proc.stderr
    sibling.kill()
    sibling.wait()


def test_a_task_whose_sibling_recorded_the_new_values_and_began_after_it_read_the_old_ones_goes_on(tmp_path, monkeypatch):
    """Task 0 reads the old record, then task 1 (same new values) records them and makes its state
    before task 0 asks whether the stage has begun: what was begun, was begun with task 0's values."""
    run = tmp_path / "run"
    old, new = (config.load(SMOKE, [f"collect.episodes={n}", "env.max_steps=100"]) for n in (5, 4))
    identity.begin(old, run, "collect")
    running_otherwise = lease.running_otherwise

    def sibling_begins_meanwhile(*args, **kwargs):
        monkeypatch.setattr(lease, "running_otherwise", running_otherwise)  # once: the sibling meets no sibling
        identity.begin(new, run, "collect")
        RunDir(run).write_state("collect", "running", task=1)
        return running_otherwise(*args, **kwargs)

    monkeypatch.setattr(lease, "running_otherwise", sibling_begins_meanwhile)
    identity.begin(new, run, "collect")
    monkeypatch.undo()  # without a sibling, values other than those it began with are refused
    with pytest.raises(ConfigError, match="was run with other values"):
        identity.begin(old, run, "collect")


def test_a_holder_in_another_pid_namespace_of_this_host_is_not_taken_for_gone(tmp_path):
    """A container sharing the host's name (`--network=host`) with its own PID namespace sees none
    of the host's processes: a live holder there must not look dead from here, nor the reverse."""
    run = tmp_path / "run"
    holder = holding_a_lease(run / "state" / "collect.lease")
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "worldmodels", "collect",
                           "--config", SMOKE, "--run-dir", str(run)], capture_output=True, text=True, env=cli_env(),
                          timeout=120)
    error = one_error_line(proc)
    assert "collect is already running" in error and f"pid {holder.pid}" in error
    assert committed(run) == 0 and holder.poll() is None
    holder.kill()
    holder.wait()


def test_a_lease_held_on_another_node_is_honoured_until_it_expires_or_its_job_is_requeued(tmp_path):
    from worldmodels.pipeline import run_stage

    run = tmp_path / "run"
    lease = run / "state" / "collect.lease"
    lease.parent.mkdir(parents=True)
    holder = {"host": "node-gone", "pid": 4242, "job": "77", "token": "theirs"}
    lease.write_text(json.dumps({**holder, "renewed": time.time()}))
    error = one_error_line(run_cli("collect", "--config", SMOKE, "--run-dir", run, check=False))
    assert "host node-gone, pid 4242, job 77" in error and "expires" in error
    assert committed(run) == 0
    # a requeued attempt of the same Slurm job takes it at once (Slurm ended the earlier one)
    assert "6 episodes" in run_stage("collect", config.load(SMOKE), run, job="77")
    lease.write_text(json.dumps({**holder, "renewed": time.time() - 3600}))  # a dead node: never renewed
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", run)
    assert "not renewed for more than 60 s" in proc.stderr and not lease.exists()


def holding_a_lease(path: Path, identity: str | None = None) -> subprocess.Popen:
    """A process holding the lease at `path` (renewed every 0.1 s) for a minute, once it holds it
    (running a stage of the identity digest `identity`)."""
    code = ("import time, worldmodels.lease as lease\n"
            "lease.HEARTBEAT_S = 0.1\n"
            f"with lease.hold(__import__('pathlib').Path({str(path)!r}), 'stage', identity={identity!r}):\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=cli_env(), stderr=subprocess.PIPE, text=True)
    wait_for(path.is_file, 120, "lease", proc=proc, every=0.05)
    return proc


def finished(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(proc.args, proc.wait(30), "", proc.stderr.read())


def test_verify_leaves_the_checkpoints_of_a_running_stage_alone_and_checks_them_once_it_stopped(tmp_path):
    run = tmp_path / "run"
    identity.begin(config.load(SMOKE), run, "report")
    (run / "checkpoints" / "vae").mkdir(parents=True)
    (run / "checkpoints" / "vae" / ".step-000000005.tmp").write_bytes(b"half")  # a checkpoint being written
    holder = holding_a_lease(run / "state" / "train-vae.lease")
    try:
        proc = run_cli("verify", run)  # not "damaged": the write is going on
        assert "not checked, train-vae is running" in proc.stdout and f"pid {holder.pid}" in proc.stdout, proc.stdout
    finally:
        holder.kill()
        holder.wait()
    proc = run_cli("verify", run, check=False)  # its holder is gone: what it left is damage
    assert proc.returncode == 1 and "left by a write that was killed midway" in proc.stdout, proc.stdout


def test_a_holder_whose_lease_was_taken_stops_at_once_writing_nothing(tmp_path):
    path = tmp_path / "state" / "stage.lease"
    proc = holding_a_lease(path)
    taken = {**json.loads(path.read_text()), "token": "another", "pid": 1}
    path.write_text(json.dumps(taken))  # what a takeover after a long stop leaves
    error = one_error_line(finished(proc))
    assert "was taken over by another process" in error
    assert json.loads(path.read_text()) == taken  # the new holder's lease is left alone


def test_a_holder_whose_run_directory_was_removed_stops_at_once_in_one_line(tmp_path):
    """The lease's heartbeat may see a removed run directory before the stage's next write does: it
    ends the process with the same one-line error, and recreates nothing."""
    run = tmp_path / "run"
    proc = holding_a_lease(run / "state" / "stage.lease")
    shutil.rmtree(run)
    error = one_error_line(finished(proc))
    assert f"{run} vanished while stage ran" in error
    assert not run.exists()


# --- the file system fails under a stage ---------------------------------------------------------


def test_a_full_disk_stops_collect_in_one_line_records_it_and_leaves_no_partial_episode(tmpfs, whole):
    fs = tmpfs(1)
    run = fs / "run"
    error = one_error_line(run_cli("collect", "--config", SMOKE, "--run-dir", run, *LONG_COLLECT, check=False))
    assert "no space left for " + str(run / "data" / "rollouts.zarr") in error and "rerun the same command" in error
    state = json.loads((run / "state" / "collect.json").read_text())
    assert state["state"] == "failed" and "No space left" in state["error"]
    assert json.loads(run_cli("status", run, "--json").stdout)["stages"]["collect"]["state"] == "failed"
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    done = len(store.complete())
    assert 0 < done < 20
    for k in range(done, 20):  # not one chunk of an uncommitted episode is left
        for name, chunks in store.episode_chunks(k, store.slot).items():
            assert not any(store.chunk_file(name, c).exists() for c in chunks), (k, name)
    assert not [p for p in fs.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    remount(fs, "size=20m")  # space freed: the same command resumes and ends as if nothing happened
    run_cli("collect", "--config", SMOKE, "--run-dir", run, *LONG_COLLECT)
    assert_same_store(whole, run / "data" / "rollouts.zarr")


def test_a_full_disk_at_a_checkpoint_stops_training_in_one_line_and_the_rerun_resumes(tmpfs, tmp_path):
    fs = tmpfs(80)  # the rollouts and one 51 MB V checkpoint fit, the second does not
    run = fs / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    error = one_error_line(run_cli("train-vae", "--config", SMOKE, "--run-dir", run, check=False))
    assert "no space left for " + str(run / "checkpoints" / "vae" / "step-000000010.pt") in error
    assert json.loads((run / "state" / "train-vae.json").read_text())["state"] == "failed"
    assert sorted(p.name for p in (run / "checkpoints" / "vae").iterdir()) == ["step-000000005.json", "step-000000005.pt"]
    remount(fs, "size=300m")
    assert "resuming from step 5" in run_cli("train-vae", "--config", SMOKE, "--run-dir", run).stderr
    assert "0 damaged" in run_cli("verify", run).stdout


def failing_reads(path: Path) -> bytes:
    """Make every read of `path` fail with EIO, as a failing disk or file server does, for real: it
    becomes a link to /proc/self/mem, whose first page no process has mapped. Returns its bytes."""
    data = path.read_bytes()
    path.unlink()
    path.symlink_to("/proc/self/mem")
    return data


def test_a_checkpoint_whose_read_fails_is_kept_as_it_is_and_stops_its_reader_in_one_line(tmp_path):
    ckpt = Checkpointer(tmp_path / "unit", every_steps=1, every_s=1e9, keep=2)
    for step in (1, 2):
        ckpt.save(step, {"step": step})
    newest = tmp_path / "unit" / "step-000000002.pt"
    data = failing_reads(newest)
    for read in (lambda: ckpt.resume("train-vae"), ckpt.load_latest):  # no fallback to step 1, nothing set aside
        with pytest.raises(StorageError, match=r"step-000000002.pt: cannot be read now \(Input/output error\)"):
            read()
    assert ckpt.steps() == [1, 2] and not ckpt.corrupt()
    newest.unlink()
    newest.write_bytes(data)  # the file system answers again
    assert ckpt.resume("train-vae")["step"] == 2

    run = tmp_path / "run"
    args = ["--config", SMOKE, "--run-dir", run]
    run_cli("collect", *args)
    run_cli("train-vae", *args)
    final = RunDir(run).checkpoints("train-vae") / "step-000000012.pt"
    data = failing_reads(final)
    error = one_error_line(run_cli("encode", *args, check=False))
    assert f"{final}: cannot be read now (Input/output error)" in error
    for repair in ([], ["--repair"]):  # reported, and not set aside as damage: it may read back whole
        proc = run_cli("verify", run, *repair, check=False)
        assert proc.returncode == 1 and f"{final}: cannot be read now" in proc.stdout + proc.stderr, proc.stdout
        assert final.is_symlink() and not list(final.parent.glob("*.repaired"))
    final.unlink()
    final.write_bytes(data)
    run_cli("encode", *args)
    assert "0 damaged" in run_cli("verify", run).stdout


def test_a_run_directory_made_read_only_or_removed_mid_stage_is_one_line(tmpfs, tmp_path):
    fs = tmpfs(40)
    run = fs / "run"
    args = ["collect", "--config", SMOKE, "--run-dir", run, *LONG_COLLECT]
    proc = start_cli(*args)
    wait_for(lambda: committed(run) >= 2, 120, "two episodes", proc=proc, every=0.05)
    remount(fs, "ro")
    out, err = proc.communicate(timeout=120)
    error = one_error_line(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert "read-only file system" in error and str(run) in error
    remount(fs, "rw")
    gone = tmp_path / "gone"
    proc = start_cli("collect", "--config", SMOKE, "--run-dir", gone, *LONG_COLLECT)
    wait_for(lambda: committed(gone) >= 2, 120, "two episodes", proc=proc, every=0.05)
    # moved out of the way in one step, then deleted: `rm -rf` alone races the stage's writes,
    # which may land in a folder it has not emptied yet and so keep that folder
    gone.rename(tmp_path / "deleted")
    shutil.rmtree(tmp_path / "deleted")
    out, err = proc.communicate(timeout=120)
    error = one_error_line(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert "vanished" in error and str(gone) in error
    time.sleep(0.5)
    assert not gone.exists()  # nothing recreated it


def test_every_write_of_a_running_stage_fails_rather_than_recreate_a_removed_run_directory(tmp_path):
    """What the test above can only catch by chance (a removal between a stage's look and its
    write), forced: each kind of write a running stage makes, into a run directory removed first."""
    run = RunDir(tmp_path / "run")
    store = EpisodeStore.create(run.path / "data" / "rollouts.zarr", fields={"actions": Field("int64")},
                                episodes=2, slot=8, chunk_steps=4, attrs={})
    writer = ChunkWriter(store.array("actions"))
    saver = Checkpointer(run.checkpoints("train-vae"), every_steps=1, every_s=0, keep=1, root=run.path)
    shutil.rmtree(run.path)
    writes = {"a dataset chunk": lambda: writer.write(1, np.zeros(writer.rows, np.int64)),
              "a stage state": lambda: run.write_state("collect", "running"),
              "a checkpoint": lambda: saver.save(1, {"w": 1}),
              "a file below the run": lambda: atomic_write(run.path / "a" / "b.json", b"{}", root=run.path)}
    for what, write in writes.items():
        with pytest.raises(FileNotFoundError):
            write()
        assert not run.path.exists(), f"{what} recreated the run directory"


def collected_with_a_chunk(run: Path) -> tuple[str, int, Path]:
    """Collect a smoke run; the last episode's second chunk of frames: (its description, the episode,
    its file)."""
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    last = int(store.complete()[-1])
    c = last * store.slot // store.array("frames").chunks[0] + 1
    return store.describe_chunk("frames", c, last), last, store.chunk_file("frames", c)


def test_a_chunk_damaged_under_a_training_stage_stops_it_in_one_line_naming_the_chunk(tmp_path):
    run = tmp_path / "run"
    chunk_named, last, chunk = collected_with_a_chunk(run)
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x01
    chunk.write_bytes(bytes(data))
    # enough steps that the shuffled loader reaches every chunk, after training has begun
    error = one_error_line(run_cli("train-vae", "--config", SMOKE, "--run-dir", run, "vae.steps=60", check=False))
    assert f"{chunk_named} does not verify" in error
    state = json.loads((run / "state" / "train-vae.json").read_text())
    assert state["state"] == "failed" and state["done"] > 0 and f"episode {last}" in state["error"]


def test_a_chunk_or_a_store_whose_read_fails_stops_training_in_one_line_and_verify_repair_drops_nothing(tmp_path):
    run = tmp_path / "run"
    chunk_named, last, chunk = collected_with_a_chunk(run)
    data = failing_reads(chunk)
    error = one_error_line(run_cli("train-vae", "--config", SMOKE, "--run-dir", run, "vae.steps=60", check=False))
    assert f"{chunk_named} cannot be read now (Input/output error)" in error
    for repair in ([], ["--repair"]):  # reported, not taken for damage: the episode stays committed
        proc = run_cli("verify", run, *repair, check=False)
        assert proc.returncode == 1 and "cannot be read now" in proc.stdout + proc.stderr, proc.stdout
        assert last in EpisodeStore.open(run / "data" / "rollouts.zarr").complete()
    chunk.unlink()
    chunk.write_bytes(data)
    assert run_cli("verify", run).stdout.strip().endswith("verify: sound (0 problems)")
    store = run / "data" / "rollouts.zarr"  # the store's own metadata: not damage either
    data = failing_reads(store / "zarr.json")
    error = one_error_line(run_cli("train-vae", "--config", SMOKE, "--run-dir", run, "vae.steps=60", check=False))
    assert f"dataset {store} cannot be read now (Input/output error)" in error
    proc = run_cli("verify", run, "--repair", check=False)
    assert proc.returncode == 1 and f"dataset {store} cannot be read now" in proc.stdout + proc.stderr, proc.stdout
    (store / "zarr.json").unlink()
    (store / "zarr.json").write_bytes(data)
    assert run_cli("verify", run).stdout.strip().endswith("verify: sound (0 problems)")


def test_an_index_entry_whose_read_fails_beside_a_damaged_one_is_reported_and_nothing_is_dropped(tmp_path):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    damaged, failing = store.chunk_file("episodes/length", 0), store.chunk_file("episodes/length", 1)
    damaged.write_bytes(damaged.read_bytes()[:-1] + bytes([damaged.read_bytes()[-1] ^ 1]))  # its checksum fails
    data = failing_reads(failing)
    for repair in ([], ["--repair"]):  # entry 1 may read back whole: nothing is uncommitted while it cannot be read
        proc = run_cli("verify", run, *repair, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "episodes/length" in out and "cannot be read now" in out, out
        assert failing.is_symlink() and damaged.read_bytes() != b""
    failing.unlink()
    failing.write_bytes(data)  # the file system answers again: the damaged entry alone is dropped
    said = " ".join(run_cli("verify", run, "--repair").stdout.split())  # verify wraps its lines
    assert f"{store.describe_chunk('episodes/length', 0, 0)} does not verify" in said and "rerun collect" in said, said
    assert list(EpisodeStore.open(run / "data" / "rollouts.zarr").complete()) == [1, 2, 3, 4, 5]
