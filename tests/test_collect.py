import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SMOKE, assert_same_store, cli_env, committed, run_cli, start_cli, tree_digest, wait_for
from worldmodels.dataset import EpisodeStore

LONGER = ["collect.episodes=8", "env.max_steps=400", "collect.envs_per_task=1"]  # ~10 s of play


def status_json(run: Path) -> dict:
    return json.loads(run_cli("status", run, "--json").stdout)


def test_collect_then_status_reports_every_episode_and_the_frames(tmp_path):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    status = status_json(run)
    collect = status["stages"]["collect"]
    assert collect["state"] == "done"
    assert collect["episodes_done"] == collect["episodes_total"] == 6
    lengths = EpisodeStore.open(run / "data" / "rollouts.zarr").lengths()
    assert collect["frames"] == int(lengths.sum()) > 6
    assert status["run_dir"] == str(run)
    assert {s["state"] for name, s in status["stages"].items() if name != "collect"} == {"pending"}


def test_rows_follow_the_documented_transition_layout(tmp_path):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    index = store.index()
    for k in store.complete():
        ep = store.read_episode(int(k))
        assert ep["frames"].shape == (index["length"][k], 64, 64, 3) and ep["frames"].dtype == np.uint8
        assert ep["actions"][0] == 0 and ep["rewards"][0] == 0
        assert ep["terminated"][-1] or ep["truncated"][-1]
        assert not (ep["terminated"][:-1].any() or ep["truncated"][:-1].any())
        assert ep["rewards"].sum() == pytest.approx(index["return"][k])
        assert ep["actions"].min() >= 0 and ep["actions"].max() < 6


def test_every_stored_episode_replays_frame_for_frame_in_a_fresh_environment(tmp_path):
    # episodes reuse the frame buffers of earlier ones: none may carry anything over
    from worldmodels import config
    from worldmodels.envs import AtariEnv

    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run, "collect.envs_per_task=1")
    store = EpisodeStore.open(run / "data" / "rollouts.zarr")
    env = AtariEnv(config.load(SMOKE, []).env)
    index = store.index()
    for k in store.complete():
        ep = store.read_episode(int(k))
        frames = [env.reset(seed=int(index["seed"][k]))[0]] + [env.step(int(a))[0] for a in ep["actions"][1:]]
        np.testing.assert_array_equal(np.stack(frames), ep["frames"])


def test_random_policy_holds_each_draw_for_one_to_n_steps(tmp_path):
    from worldmodels import config, seeds

    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run, "collect.action_repeat_max=4", "env.max_steps=200")
    actions = EpisodeStore.open(run / "data" / "rollouts.zarr").read_episode(2)["actions"][1:]
    rng, expected, holds = seeds.rng(config.load(SMOKE), "collect.policy", 2), [], []
    while len(expected) < len(actions):
        action, hold = rng.integers(6), rng.integers(1, 5)
        expected += [action] * hold
        holds.append(hold)
    np.testing.assert_array_equal(actions, expected[: len(actions)])
    assert set(holds) == {1, 2, 3, 4}


def test_the_dataset_does_not_depend_on_how_work_was_split(tmp_path):
    one, split = tmp_path / "one", tmp_path / "split"
    run_cli("collect", "--config", SMOKE, "--run-dir", one, "collect.envs_per_task=1")
    procs = [start_cli("collect", "--config", SMOKE, "--run-dir", split, "collect.envs_per_task=1",
                       "--task", t, "--num-tasks", 4) for t in range(4)]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    assert_same_store(one / "data" / "rollouts.zarr", split / "data" / "rollouts.zarr")
    # batching episodes in lockstep changes nothing either
    batched = tmp_path / "batched"
    run_cli("collect", "--config", SMOKE, "--run-dir", batched, "collect.envs_per_task=1", "collect.envs_per_task=3")
    assert_same_store(one / "data" / "rollouts.zarr", batched / "data" / "rollouts.zarr")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_collection_rerun_ends_identical_to_an_uninterrupted_one(tmp_path, sig):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_cli("collect", "--config", SMOKE, "--run-dir", whole, *LONGER)
    proc = start_cli("collect", "--config", SMOKE, "--run-dir", cut, *LONGER)
    wait_for(lambda: committed(cut) >= 2, 120, "two episodes", proc=proc, every=0.05)
    proc.send_signal(sig)
    code = proc.wait(30)
    if sig == signal.SIGTERM:
        assert code == 75, proc.stderr.read()  # "requeue me"
        assert status_json(cut)["stages"]["collect"]["state"] == "partial"
    done_before = (EpisodeStore.open(cut / "data" / "rollouts.zarr").lengths() > 0).sum()
    assert 2 <= done_before < 8
    # resumed with another number of environments in lockstep (which belongs to no identity)
    rerun = run_cli("collect", "--config", SMOKE, "--run-dir", cut, *LONGER, "collect.envs_per_task=3")
    assert f"({8 - done_before} collected now)" in rerun.stdout  # committed episodes were skipped
    assert_same_store(whole / "data" / "rollouts.zarr", cut / "data" / "rollouts.zarr")


def test_rerunning_a_finished_collection_does_nothing(tmp_path):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    before = tree_digest(run / "data")
    assert "(0 collected now)" in run_cli("collect", "--config", SMOKE, "--run-dir", run).stdout
    assert tree_digest(run / "data") == before
    assert "(0 collected now)" in run_cli("collect", "--run-dir", run).stdout  # the saved config is used


@pytest.mark.parametrize("overrides, message", [
    (["env.id=SpaceInvadersNoFrameskip-v77"], "unknown environment"),
    (["collect.episodes=-3"], "collect.episodes"),
    (["collect.episodes=9"], "collect in"),
    (["collect.policy=expert"], "unknown policy"),
])
def test_bad_input_is_one_clear_line_and_leaves_existing_data_untouched(tmp_path, overrides, message):
    run = tmp_path / "run"
    run_cli("collect", "--config", SMOKE, "--run-dir", run)
    before = tree_digest(run)
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", run, *overrides, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    if message == "collect in":  # a changed identity names the stage and the key, and says how to branch
        assert "was run with other values (collect.episodes: 6 -> 9)" in proc.stderr and "--from" in proc.stderr
    assert tree_digest(run) == before


@pytest.fixture
def readonly_dir(tmp_path):
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    # Permissions do not stop root: a read-only filesystem does.
    import subprocess

    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, readonly_dir):
    for run in (readonly_dir / "run", tmp_path / "a-file" / "run"):
        (tmp_path / "a-file").write_text("not a directory")
        proc = run_cli("collect", "--config", SMOKE, "--run-dir", run, check=False)
        assert proc.returncode == 2 and "is not writable" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_wandb_runs_offline_in_the_run_directory_grouped_by_it_and_never_shows_the_key(tmp_path, monkeypatch):
    from worldmodels.rundir import RunDir

    secret = "f" * 8 + "0123456789abcdef0123456789abcdef"  # a well-formed 40-character API key
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    proc = run_cli("collect", "--config", SMOKE, "--run-dir", run, "logging.wandb=true", "collect.episodes=2")
    runs = list((run / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # offline: nothing was sent anywhere
    log = next(runs[0].glob("*.wandb")).read_bytes()
    assert RunDir(run).group_name().encode() in log and b"episode/return" in log
    assert secret not in proc.stdout + proc.stderr
    assert not any(secret.encode() in p.read_bytes() for p in run.rglob("*") if p.is_file())


def test_an_interrupted_stage_resumes_the_same_wandb_run(tmp_path, monkeypatch):
    from worldmodels.rundir import RunDir

    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    proc = start_cli("collect", "--config", SMOKE, "--run-dir", run, "logging.wandb=true", *LONGER)
    wait_for(lambda: committed(run) >= 2, 120, "two episodes", proc=proc, every=0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 75
    run_cli("collect", "--config", SMOKE, "--run-dir", run, "logging.wandb=true", *LONGER)
    attempts = sorted((run / "wandb" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2  # one per attempt, both the same wandb run: synced, it is one history
    assert {p.name.rsplit("-", 1)[1] for p in attempts} == {RunDir(run).run_id("collect")}


@pytest.mark.parametrize("mask", [0o002, 0o077])
def test_files_follow_the_umask_and_a_run_others_may_not_read_is_said_in_one_line(tmp_path, mask):
    # a shared group project directory (umask 002) must give colleagues a readable, writable run
    run = tmp_path / "run"
    proc = subprocess.run(["bash", "-c", f"umask {mask:03o} && exec {sys.executable} -m worldmodels collect "
                           f"--config {SMOKE} --run-dir {run} collect.episodes=2"], env=cli_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    files = [p for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~mask}
    if mask == 0o077:  # another user (nobody) asks for the status of a run it may not read
        run.parent.chmod(0o711)  # it may reach the run, not read it
        # The interpreter may live where nobody cannot read (root's home): the process starts as
        # root, imports what `status` needs, then becomes nobody before the command reads the run.
        as_nobody = ("import os, sys, pwd, cli.main, cli.views, worldmodels.status, worldmodels.sweep, jobs.status; "
                     "u = pwd.getpwnam('nobody'); os.setgroups([]); os.setgid(u.pw_gid); os.setuid(u.pw_uid); "
                     "sys.exit(cli.main.main(sys.argv[1:]))")
        proc = subprocess.run([sys.executable, "-c", as_nobody, "status", str(run)], env=cli_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and "permission denied" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_the_status_table_keeps_one_line_per_stage_when_an_error_spans_several():
    from worldmodels.status import format_status

    error = "AssertionError: expected size 128==128, stride 25==1 at dim=1\nError in op: convolution_backward"
    table = format_status({"run_dir": "runs/a", "stages": {"collect": {"state": "done", "episodes_done": 6},
                                                            "train-vae": {"state": "failed", "error": error, "step": 0}}})
    assert table.splitlines() == ["run runs/a", "  collect           done     own   episodes_done=6",
                                  "  train-vae         failed   own   error=AssertionError: expected size 128==128, "
                                  "stride 25==1 at dim=1 ..., step=0"]
