"""Iterative training: round 1 collects with round 0's controller, continues V, M and C, and is a set
of ordinary stages: interrupted anywhere and rerun, it ends with the same artifacts."""

import json
import random
import shutil
import signal

import numpy as np
import pytest

from conftest import ROOT, SMOKE, assert_same_store, read_store, run_cli, start_cli, tree_digest
from test_training import assert_bitwise_equal, final_state, wait_for_step
from worldmodels import cma_internals, config
from worldmodels.identity import identity
from worldmodels.stages import STAGES

PROFILE = ROOT / "slurm" / "profiles" / "local.yaml"
ARGS = ["--config", SMOKE, "rounds.count=2", "vae.steps=30", "train.log_every_steps=1", "train.checkpoint_every_steps=7",
        "evaluate.videos=0"]


def run_round(run, r, *extra, until=None):
    """Every stage of round r (up to `until`, excluded), each as the CLI runs it; their stderr."""
    logs = {}
    for stage in STAGES:
        if stage == until:
            break
        logs[stage] = run_cli(stage, "--run-dir", run, "--round", str(r), *ARGS, *extra).stderr
    return logs


@pytest.fixture(scope="module")
def round0(tmp_path_factory):
    run = tmp_path_factory.mktemp("rounds") / "run"
    run_round(run, 0)
    return run


def test_round_two_interrupted_by_sigterm_and_rerun_ends_identical_to_an_uninterrupted_one(round0, tmp_path):
    whole, cut = shutil.copytree(round0, tmp_path / "whole"), shutil.copytree(round0, tmp_path / "cut")
    logs = run_round(whole, 1)
    # the collecting controller's episodes do not depend on which others share their batch
    run_round(cut, 1, "collect.envs_per_task=1", until="train-vae")
    proc = start_cli("train-vae", "--run-dir", cut, "--round", "1", *ARGS)
    wait_for_step(cut / "rounds" / "1", "train-vae", random.randrange(2, 20), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 75, proc.stderr.read()
    status = json.loads(run_cli("status", cut, "--json").stdout)
    assert [r["round"] for r in status["rounds"]] == [1]
    assert status["rounds"][0]["stages"]["train-vae"]["state"] == "partial"
    assert status["rounds"][0]["stages"]["collect"]["state"] == "done"
    rerun = run_round(cut, 1, until="evaluate")  # (evaluate plays a controller alike whatever made it)
    assert "resuming from step" in rerun["train-vae"]

    a, b = whole / "rounds" / "1", cut / "rounds" / "1"
    for store in ("rollouts.zarr", "latents.zarr"):
        assert_same_store(a / "data" / store, b / "data" / store)
    for stage in ("train-vae", "train-mdnrnn"):
        assert_bitwise_equal(final_state(a, stage)["model"], final_state(b, stage)["model"], f"round 1 {stage}")
    for key in ("mean", "best", "history"):
        assert_bitwise_equal(final_state(a, "train-controller")[key], final_state(b, "train-controller")[key], key)
    before = tree_digest(b / "checkpoints")
    run_cli("train-vae", "--run-dir", cut, "--round", "1", *ARGS)
    assert tree_digest(b / "checkpoints") == before  # a finished round reruns as nothing to do

    # what round 1 is: new games played by round 0's controller, V and M continued on both rounds'
    # episodes, CMA-ES continued, scored on the same evaluation episodes
    first, second = read_store(whole / "data" / "rollouts.zarr"), read_store(a / "data" / "rollouts.zarr")
    episodes = range(6)
    assert any(not np.array_equal(first[f"{k}/actions"], second[f"{k}/actions"]) for k in episodes)
    latents = read_store(a / "data" / "latents.zarr")
    assert len(latents["index/length"]) == 12
    for k in episodes:
        for name in ("actions", "rewards"):
            assert np.array_equal(latents[f"{k}/{name}"], first[f"{k}/{name}"]), (k, name)
            assert np.array_equal(latents[f"{k + 6}/{name}"], second[f"{k}/{name}"]), (k, name)
    assert "continuing from" in logs["train-vae"] and "continuing from" in logs["train-mdnrnn"]
    assert "continuing CMA-ES" in logs["train-controller"]
    es = cma_internals.loads(final_state(a, "train-controller")["es"].numpy().tobytes())
    assert es.countiter == 2 * 3  # round 0's generations, then round 1's
    results = [json.loads((d / "eval" / "results.json").read_text()) for d in (whole, a)]
    assert results[0]["seeds"] == results[1]["seeds"]
    assert "24 baseline episodes taken from" in logs["evaluate"]  # round 0's games: not played again
    for protocol, block in results[1]["protocols"].items():
        theirs = results[0]["protocols"][protocol]
        assert block["random"] == theirs["random"] and block["heuristics"] == theirs["heuristics"]
    page = (a / "report" / "index.html").read_text()
    assert "<h2>Rounds</h2>" in page and f"{results[0]['mean']:.1f}" in page and f"{results[1]['mean']:.1f}" in page
    assert "round 1: run" in run_cli("status", whole).stdout


def test_a_later_round_refuses_what_it_cannot_continue_in_one_line_and_writes_nothing(round0, tmp_path):
    bad = {("--round", "2"): "rounds.count=2 (rounds 0..1)",
           ("--round", "1", "rounds.explore=1.5"): "'rounds.explore' must be in [0, 1]",
           ("--round", "1", "controller.popsize=6"): "round 0 in",
           ("rounds.index=1",): "belongs in RUN_DIR/rounds/1"}
    before = tree_digest(round0)
    for extra, message in bad.items():
        proc = run_cli("collect", "--run-dir", round0, *ARGS, *extra, check=False)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert tree_digest(round0) == before

    proc = run_cli("sweep", "--sweep-dir", tmp_path / "sweep", *ARGS, "--grid", "controller.seed=1,2", "--executor", "slurm",
                   "--profile", PROFILE, check=False)
    assert proc.returncode == 2 and "each submitted with all its rounds (submit pipeline)" in proc.stderr, proc.stderr
    assert not (tmp_path / "sweep").exists()
    # the pipeline of every round: round 1 waits for round 0's controller, not for its evaluation
    proc = run_cli("submit", "pipeline", "--run-dir", tmp_path / "planned", "--profile", PROFILE, "--dry-run", *ARGS)
    assert proc.stdout.count("# --- collect ---") == 2 and proc.stdout.index("round 0:") < proc.stdout.index("round 1:")
    round1 = proc.stdout[proc.stdout.index("round 1:"):]
    assert "afterok:<round 0 train-controller>" in round1 and f"{tmp_path}/planned/rounds/1/slurm/" in round1
    proc = run_cli("submit", "evaluate", "--run-dir", round0, "--profile", PROFILE, "--dry-run", *ARGS)
    assert "submit round 1 (--round 1) once this one has finished" in proc.stdout
    # in a container, a later round's jobs bind round 0's directory, which holds the rounds before it
    proc = run_cli("submit", "train-vae", "--round", "1", "--run-dir", round0, "--profile", PROFILE, "--dry-run",
                   "--container", tmp_path / "image.sif", *ARGS)
    assert f"--bind {round0} " in proc.stdout and f"{round0}/rounds/1/slurm/" in proc.stdout, proc.stdout

    fresh = tmp_path / "fresh"  # round 0 has collected but not trained C
    run_cli("collect", "--run-dir", fresh, *ARGS)
    proc = run_cli("collect", "--run-dir", fresh, "--round", "1", *ARGS, check=False)
    assert proc.returncode == 2 and "train-controller has not run" in proc.stderr, proc.stderr
    assert not (fresh / "rounds").exists()


def test_round_zero_is_the_plain_pipeline_so_a_finished_run_can_grow_rounds(smoke_cfg):
    assert run_cli("rounds", "--config", SMOKE, "rounds.count=3").stdout.split() == ["0", "1", "2"]  # what make demo loops over
    more = config.override(smoke_cfg, ["rounds.count=3", "rounds.explore=0.5"])
    for stage in STAGES:
        assert identity(more, stage) == identity(smoke_cfg, stage)
    later = config.override(more, ["rounds.index=1"])
    assert identity(later, "collect")["rounds.index"] == 1
    assert "controller.popsize" in identity(later, "collect")  # round 1 plays round 0's controller
    # and which of its controllers plays (the best, as in runs recorded before this key counted, or the mean)
    assert "evaluate.controller" not in identity(later, "collect")
    assert identity(config.override(later, ["evaluate.controller=mean"]), "collect")["evaluate.controller"] == "mean"
    assert identity(config.override(smoke_cfg, ["evaluate.controller=mean"]), "collect") == identity(smoke_cfg, "collect")
