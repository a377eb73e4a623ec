import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMOKE, cli_env, run_cli, start_cli, tree_digest, wait_for
from worldmodels import config
from worldmodels.checkpoint import Checkpointer, load_file
from worldmodels.controller import controller_size, flatten, unflatten
from worldmodels.preemption import REQUEUE_EXIT_CODE
from worldmodels.stages import chain

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A smoke run with finished V and M: everything train-controller needs."""
    run = tmp_path_factory.mktemp("world") / "run"
    for stage in chain("train-mdnrnn"):
        run_cli(stage, "--config", SMOKE, "--run-dir", run)
    return run


def copy_world(world: Path, dest: Path) -> Path:
    shutil.copytree(world, dest, ignore=shutil.ignore_patterns("controller", "eval", "state", "config.yaml"))
    return dest


def mpirun(n: int, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run(["mpirun", "-n", str(n), sys.executable, "-m", "worldmodels", *map(str, args)],
                          capture_output=True, text=True, env={**cli_env(), **MPI_ENV}, timeout=timeout)


def last_checkpoint(run: Path) -> dict:
    directory = run / "checkpoints" / "controller"
    return load_file(directory / f"step-{Checkpointer(directory, every_steps=1, every_s=1, keep=1).steps()[-1]:09d}.pt")


@pytest.mark.parametrize("inputs, features, size", [("z", 32, 198), ("zh", 288, 1734), ("zhc", 544, 3270)])
def test_what_the_controller_sees_sets_its_size_as_documented(inputs, features, size):
    assert controller_size(32, 256, 6, inputs) == size  # the numbers config.py and the README give
    weights, biases = unflatten(torch.zeros(2, size), 32, 256, 6, inputs)
    assert weights.shape == (2, 6, features) and biases.shape == (2, 6)


def test_ablations_branch_from_a_world_z_only_controller_and_untrained_m(world, tmp_path):
    z_only = tmp_path / "z-only"
    args = ["--config", SMOKE, "--from", world, "controller.generations=1", "evaluate.videos=0"]
    run_cli("train-controller", "--run-dir", z_only, *args, "controller.inputs=z")
    assert last_checkpoint(z_only)["size"] == (8 + 1) * 6  # smoke: z=8, 6 actions, no h
    run_cli("evaluate", "--run-dir", z_only, *args, "controller.inputs=z")
    assert len(json.loads((z_only / "eval" / "results.json").read_text())["scores"]) == 4
    # the run's controller sees z: evaluating it as one that sees more is refused, in one line
    refused = run_cli("evaluate", "--run-dir", z_only, *args, "controller.inputs=zhc", check=False)
    assert refused.returncode == 2 and "controller.inputs" in refused.stderr, refused.stderr
    # mdnrnn.steps=0: M keeps its initialisation; V and the data are the world's, reused
    untrained = tmp_path / "untrained-m"
    assert "finished at step 0" in run_cli("train-mdnrnn", "--run-dir", untrained, *args, "mdnrnn.steps=0").stdout
    out = run_cli("train-controller", "--run-dir", untrained, *args, "mdnrnn.steps=0")
    assert "train-controller: finished at generation 1" in out.stdout
    status = json.loads(run_cli("status", untrained, "--json").stdout)["stages"]
    assert "reused_from" in status["train-vae"] and "reused_from" not in status["train-mdnrnn"]
    assert status["train-mdnrnn"]["state"] == "done" and status["train-mdnrnn"]["step"] == 0
    trained = load_file(next((world / "checkpoints" / "mdnrnn").glob("step-*.pt")))["model"]
    initial = load_file(untrained / "checkpoints" / "mdnrnn" / "step-000000000.pt")["model"]
    assert not torch.equal(trained["lstm.weight_hh_l0"], initial["lstm.weight_hh_l0"])
    for bad in ("controller.inputs=zc", "mdnrnn.steps=-1"):
        proc = run_cli("train-controller", "--run-dir", tmp_path / "bad", *args, bad, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and bad.split("=")[0] in proc.stderr, proc.stderr
        assert not (tmp_path / "bad").exists()


def test_controller_size_and_vector_round_trip():
    assert controller_size(32, 256, 6) == 1734
    params = torch.randn(5, 1734)
    weights, biases = unflatten(params, 32, 256, 6)
    assert weights.shape == (5, 6, 288) and biases.shape == (5, 6)
    assert torch.equal(flatten(weights, biases), params)
    with pytest.raises(ValueError, match="1734"):
        unflatten(torch.randn(2, 1000), 32, 256, 6)


@pytest.mark.parametrize("mode", ["real", "dream"])
def test_sigterm_at_a_random_generation_then_rerun_ends_with_the_same_history(world, tmp_path, mode):
    cut_and_resume(world, tmp_path, [f"controller.mode={mode}"])


def test_a_controller_of_over_300_parameters_cut_and_resumed_ends_with_the_same_history(world, tmp_path):
    # From 300 parameters on, cma's step-size rule (TPA) draws from numpy's global random stream in
    # every tell, which a search unpickled from its checkpoint did not follow: a resumed run asked
    # other candidates from its second generation on (worldmodels/cma_internals.py)
    wide = ["mdnrnn.hidden=32", "controller.inputs=zhc"]  # (8 + 2 * 32) * 6 + 6 = 438 parameters
    base = tmp_path / "wide"
    shutil.copytree(world, base, ignore=shutil.ignore_patterns("controller", "mdnrnn", "eval", "state", "config.yaml"))
    run_cli("train-mdnrnn", "--config", SMOKE, "--run-dir", base, *wide)
    cut_and_resume(base, tmp_path, [*wide, "controller.mode=dream"])


def test_a_controller_playing_v_in_int8_cut_and_resumed_with_other_batches_ends_with_the_same_history(world, tmp_path):
    base = tmp_path / "int8"  # V as it is; its latents and M again, from V in int8
    shutil.copytree(world, base, ignore=shutil.ignore_patterns("latents.zarr", "mdnrnn", "controller", "eval", "state",
                                                               "config.yaml"))
    for stage in ("encode", "train-mdnrnn"):
        run_cli(stage, "--config", SMOKE, "--run-dir", base, "vae.precision=int8")
    cut_and_resume(base, tmp_path, ["vae.precision=int8"])


def controllers_following_h() -> np.ndarray:
    """Three smoke controllers for games long enough (150 steps) that a repeated action changes a
    score: without biases, their actions follow M's h (the smoke V's z hardly changes from frame to
    frame); rows 2-4 of the draw include one whose score sticky actions change, most others' they do not."""
    params = np.random.default_rng(1).normal(size=(8, controller_size(8, 16, 6)))[2:5]
    params[:, -6:] = 0
    return params


def test_training_under_sticky_actions_plays_other_games_the_same_every_time(world):
    from worldmodels.envs import EnvPool
    from worldmodels.evolution import real_returns, training_env
    from worldmodels.rundir import RunDir

    vae, mdnrnn = RunDir(world).load_world_model(config.load(SMOKE))
    params = controllers_following_h()
    jobs = [(c, r) for c in range(3) for r in range(2)]
    returns = {}
    for name, protocol in (("v4", "null"), ("sticky", "sticky"), ("again", "sticky")):
        cfg = config.load(SMOKE, ["env.max_steps=150", f"controller.protocol={protocol}"])
        envs = EnvPool(training_env(cfg))
        returns[name] = real_returns(cfg, vae, mdnrnn, params, jobs, 0, "controller.train", None, envs).tolist()
    assert returns["sticky"] == returns["again"] and returns["sticky"] != returns["v4"], returns


def cut_and_resume(world: Path, tmp_path: Path, overrides: list[str]) -> None:
    """Ten generations uninterrupted, and cut by SIGTERM at a random one then rerun: the same run."""
    args = ["--config", SMOKE, *overrides, "controller.generations=10"]
    whole, cut = copy_world(world, tmp_path / "whole"), copy_world(world, tmp_path / "cut")
    run_cli("train-controller", *args, "--run-dir", whole)
    at = random.randrange(1, 8)
    proc = start_cli("train-controller", *args, "--run-dir", cut)
    directory = cut / "checkpoints" / "controller"
    wait_for(lambda: directory.exists() and len(list(directory.glob("*.json"))) >= min(at, 3)
             and max(int(p.stem.split("-")[1]) for p in directory.glob("*.json")) >= at,
             120, f"generation {at}", proc=proc, every=0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 75, proc.stderr.read()
    stopped = last_checkpoint(cut)["generation"]
    assert at <= stopped < 10
    # resumed with other lockstep batches and without the master playing (in no identity)
    rerun = run_cli("train-controller", *args, "--run-dir", cut, "controller.batch=3", "controller.master_evaluates=false")
    assert f"resuming after generation {stopped}" in rerun.stderr
    a, b = last_checkpoint(whole), last_checkpoint(cut)
    assert a["history"] == b["history"] and len(a["history"]) == 10
    final = "checkpoints/controller/step-000000010.pt"
    assert (whole / final).read_bytes() == (cut / final).read_bytes()  # the CMA-ES state included


def test_forty_generations_are_bitwise_the_same_under_one_process_mpirun_and_a_launcher_change(world, tmp_path):
    # CMA-ES's BLAS sums in another order on another number of threads: one process (two threads
    # here) and mpirun's ranks (bound to one core) used to drift apart from about generation 5.
    # Any number of ranks splits the episodes its own way and must still give the same run.
    args = ["--config", SMOKE, "controller.mode=dream", "controller.generations=40"]
    one, three, moved = (copy_world(world, tmp_path / name) for name in ("one", "three", "moved"))
    run_cli("train-controller", *args, "--run-dir", one)
    proc = mpirun(3, "train-controller", *args, "--run-dir", three)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = "checkpoints/controller/step-000000040.pt"
    assert (one / final).read_bytes() == (three / final).read_bytes()  # the CMA-ES state included
    # started under mpirun, stopped by a signal halfway, finished as one process
    ranks = subprocess.Popen(["mpirun", "-n", "2", sys.executable, "-m", "worldmodels", "train-controller", *map(str, args),
                              "--run-dir", str(moved)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**cli_env(), **MPI_ENV})
    directory = moved / "checkpoints" / "controller"
    wait_for(lambda: directory.exists() and any(int(p.stem.split("-")[1]) >= 15 for p in directory.glob("*.json")),
             120, "generation 15", proc=ranks, every=0.01)
    ranks.send_signal(signal.SIGTERM)  # mpirun passes it to every rank
    ranks.wait(60)
    stopped = last_checkpoint(moved)["generation"]
    assert 15 <= stopped < 40
    assert f"resuming after generation {stopped}" in run_cli("train-controller", *args, "--run-dir", moved).stderr
    a, c = last_checkpoint(one), last_checkpoint(moved)
    assert a["history"] == c["history"] and len(a["history"]) == 40
    assert (one / final).read_bytes() == (moved / final).read_bytes()  # resumed: the CMA-ES read back pickles alike


def test_dream_rollouts_are_deterministic_and_do_not_depend_on_how_episodes_are_split(world):
    from worldmodels.evolution import dream_returns
    from worldmodels.rundir import RunDir

    cfg = config.load(SMOKE, ["controller.dream_steps=40"])
    mdnrnn = RunDir(world).load_mdnrnn(cfg)
    starts = RunDir(world).start_latents()
    params = np.random.default_rng(0).normal(size=(4, controller_size(8, 16, 6)))
    jobs = [(p, r) for p in range(4) for r in range(cfg.controller.rollouts)]
    a = dream_returns(cfg, mdnrnn, starts, params, jobs, generation=3)
    b = dream_returns(cfg, mdnrnn, starts, params, jobs, generation=3)
    assert a.shape == (len(jobs),) and np.array_equal(a, b)
    halves = np.concatenate([dream_returns(cfg, mdnrnn, starts, params, jobs[:3], 3),
                             dream_returns(cfg, mdnrnn, starts, params, jobs[3:], 3)])
    np.testing.assert_array_equal(a, halves)
    other = dream_returns(cfg, mdnrnn, starts, params, jobs, generation=4)
    assert np.isfinite(other).all()


def test_ranks_whose_cpu_kernels_round_differently_are_said_and_recorded(world, tmp_path):
    """Rank 1 under ATEN_CPU_CAPABILITY=default stands in for a node with another kind of CPU."""
    run = copy_world(world, tmp_path / "run")
    stage = [sys.executable, "-m", "worldmodels", "train-controller", "--config", str(SMOKE), "--run-dir", str(run),
             "controller.generations=1"]
    proc = subprocess.run(["mpirun", "-n", "1", *stage, ":", "-n", "1", "-x", "ATEN_CPU_CAPABILITY=default", *stage],
                          capture_output=True, text=True, env={**cli_env(), **MPI_ENV}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the ranks' CPU kernels round differently" in proc.stderr
    marker = json.loads((run / "checkpoints" / "controller" / "step-000000001.json").read_text())
    assert len(marker["kernels"].split("+")) == 2


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP])
def test_a_killed_or_hung_rank_makes_the_whole_job_exit_nonzero_promptly(world, tmp_path, how):
    run = copy_world(world, tmp_path / "run")
    proc = subprocess.Popen(["mpirun", "-n", "2", sys.executable, "-m", "worldmodels", "train-controller", "--config",
                             str(SMOKE), "--run-dir", str(run), "controller.generations=1000", "controller.heartbeat_s=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**cli_env(), **MPI_ENV})
    directory = run / "checkpoints" / "controller"
    wait_for(lambda: directory.exists() and list(directory.glob("*.json")), 120, "a checkpoint", proc=proc, every=0.05)
    ranks = subprocess.run(["pgrep", "-f", f"train-controller --config {SMOKE} --run-dir {run}"], capture_output=True, text=True)
    pids = [int(p) for p in ranks.stdout.split() if int(p) != proc.pid]
    children = [p for p in pids if Path(f"/proc/{p}/environ").exists()
                and b"OMPI_COMM_WORLD_RANK=1" in Path(f"/proc/{p}/environ").read_bytes()]
    assert children, f"rank 1 not found among {pids}"
    killed_at = time.monotonic()
    os.kill(children[0], how)
    code = proc.wait(60)
    assert code != 0 and time.monotonic() - killed_at < 60
    if how == signal.SIGSTOP:  # the other rank's heartbeat watcher ends the job, asking for a rerun
        assert code == REQUEUE_EXIT_CODE and time.monotonic() - killed_at < 3 + 20
        assert f"rank 1 on {socket.gethostname()} sent no heartbeat for 3 s" in proc.stderr.read()


def test_evaluate_scores_controller_and_baselines_on_the_same_seeds_then_report_and_push(world, tmp_path):
    run = copy_world(world, tmp_path / "run")
    args = ["--config", SMOKE, "--run-dir", run]
    run_cli("train-controller", *args)
    for task in range(2):  # two tasks owning disjoint episodes; the second completes results.json
        run_cli("evaluate", *args, "--task", task, "--num-tasks", 2, f"evaluate.batch={4 - 3 * task}")
    results = json.loads((run / "eval" / "results.json").read_text())
    whole = tmp_path / "whole"
    run_cli("evaluate", "--config", SMOKE, "--run-dir", whole, "--from", run, "evaluate.videos=0")
    # every protocol's scores are a function of the seeds alone: the same split in two tasks with other
    # batches as in one
    assert json.loads((whole / "eval" / "results.json").read_text())["protocols"] == results["protocols"]
    for key in ("episodes", "mean", "std", "scores", "random", "controller", "env_id", "seeds", "heuristics", "protocols"):
        assert key in results
    v4, sticky = results["protocols"]["v4"], results["protocols"]["sticky"]
    assert results["protocol"] == "v4" and v4["scores"] == results["scores"] and v4["repeat_action_probability"] == 0
    assert sticky["repeat_action_probability"] == 0.25 and v4["distinct"] == len(set(v4["scores"]))
    # sticky actions change the games: the same policies on the same seeds score otherwise
    assert [b["scores"] for b in (v4, v4["random"], *v4["heuristics"].values())] != \
        [b["scores"] for b in (sticky, sticky["random"], *sticky["heuristics"].values())]
    assert results["episodes"] == 4 and len(results["scores"]) == len(results["seeds"]) == 4
    assert set(results["heuristics"]) == {"always_fire", "sweep_fire"}
    assert len(set(results["seeds"])) == 4
    assert results["env_id"] == "SpaceInvadersNoFrameskip-v4"
    assert list((run / "eval" / "videos").glob("controller-episode-0.mp4"))
    assert (run / "eval" / "videos" / "controller-episode-0.mp4").stat().st_size > 1000
    status = json.loads(run_cli("status", run, "--json").stdout)["stages"]
    assert status["evaluate"] == {"state": "done", "mean": results["mean"], "std": results["std"], "mean_sticky": sticky["mean"]}
    assert status["train-controller"]["generation"] == 3 and status["train-controller"]["state"] == "done"
    run_cli("report", *args)
    page = (run / "report" / "index.html").read_text()
    assert "controller-fitness.png" in page and "eval-scores.png" in page and "controller-episode-0.mp4" in page
    assert (run / "report" / "controller-fitness.png").is_file()
    out = tmp_path / "upload"
    run_cli("push", *args, "--dry-run", out)
    assert {p.name for p in (out / "models").glob("*.pt")} == {"vae.pt", "mdnrnn.pt", "controller.pt"}
    assert (out / "README.md").read_text().startswith("---") and json.loads((out / "results.json").read_text()) == results
    assert (out / "report" / "index.html").is_file() and (out / "config.yaml").is_file()


def test_always_fire_scores_the_same_on_every_seed_as_the_reference_measured():
    # REFERENCE: with the standard wrapper, always FIRE scores 285 on every seed.
    from worldmodels.envs import AtariEnv
    from worldmodels.policies import ScriptedPolicy
    from worldmodels.rollout import Episode, play

    cfg = config.load(None)
    env = AtariEnv(cfg.env)
    scores = []
    play(cfg.env, ScriptedPolicy("always_fire", env.action_names, 2),
         [Episode(k, 1000 + k) for k in range(2)], lambda p: scores.append(p.ret), batch=2)
    assert scores == [285.0, 285.0]


def test_a_baseline_needing_actions_the_game_lacks_is_refused_by_name():
    from worldmodels.envs import AtariEnv
    from worldmodels.errors import ConfigError
    from worldmodels.policies import ScriptedPolicy

    breakout = AtariEnv(config.load(None, ["env.id=BreakoutNoFrameskip-v4"]).env).action_names
    assert breakout == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    ScriptedPolicy("always_fire", breakout, 1)
    with pytest.raises(ConfigError, match="the sweep_fire baseline needs RIGHTFIRE, LEFTFIRE, which this game's actions"):
        ScriptedPolicy("sweep_fire", breakout, 1)


def test_train_controller_refuses_missing_world_models_and_bad_popsize(world, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(world / "data", run / "data")
    shutil.copytree(world / "checkpoints" / "vae", run / "checkpoints" / "vae")
    proc = run_cli("train-controller", "--config", SMOKE, "--run-dir", run, check=False)
    assert proc.returncode == 2 and "train-mdnrnn is not finished" in proc.stderr and proc.stderr.count("\n") == 1
    proc = run_cli("train-controller", "--config", SMOKE, "--run-dir", tmp_path / "x", "controller.popsize=1", check=False)
    assert proc.returncode == 2 and "controller.popsize" in proc.stderr
    proc = run_cli("evaluate", "--config", SMOKE, "--run-dir", run, check=False)
    assert proc.returncode == 2 and "is not finished" in proc.stderr


def test_evaluate_refuses_a_controller_of_another_size(world, tmp_path):
    run = copy_world(world, tmp_path / "run")
    run_cli("train-controller", "--config", SMOKE, "--run-dir", run)
    path = sorted((run / "checkpoints" / "controller").glob("*.pt"))[-1]
    state = load_file(path)
    state["best"] = torch.zeros(10, dtype=torch.float64)
    directory = run / "checkpoints" / "controller"
    shutil.rmtree(directory)
    Checkpointer(directory, every_steps=1, every_s=1, keep=3).save(3, state)
    before = tree_digest(run / "eval") if (run / "eval").exists() else {}
    proc = run_cli("evaluate", "--config", SMOKE, "--run-dir", run, check=False)
    assert proc.returncode == 2 and "controller has 10 parameters, the world model needs" in proc.stderr
    assert (tree_digest(run / "eval") if (run / "eval").exists() else {}) == before


def test_selection_under_sticky_actions_rescores_the_same_candidates_in_other_games_and_under_both_by_the_mean(world):
    from worldmodels.distributed import Single
    from worldmodels.envs import EnvPool
    from worldmodels.evolution import _select
    from worldmodels.rundir import RunDir

    base = ["env.max_steps=150", "controller.select=3", "controller.select_rollouts=2"]
    vae, mdnrnn = RunDir(world).load_world_model(config.load(SMOKE))
    top = controllers_following_h()
    state = {"top": top, "top_fitness": np.zeros(3)}
    rescored = {}
    for protocol in ("null", "sticky"):  # null: the run's own games, v4's here
        cfg = config.load(SMOKE, [*base, f"controller.select_protocol={protocol}"])
        rescored[protocol] = _select(cfg, Single(), [0], vae, mdnrnn, state, 2, None, EnvPool(cfg.env))["rescored"]
    assert rescored["null"] != rescored["sticky"], rescored
    # under both: each protocol's games as above, and the mean of the two ranks the candidates
    cfg = config.load(SMOKE, [*base, "controller.select_protocol=[v4, sticky]"])
    both = _select(cfg, Single(), [0], vae, mdnrnn, state, 2, None, EnvPool(cfg.env))
    assert both["protocols"] == {"v4": rescored["null"], "sticky": rescored["sticky"]}, both
    assert both["rescored"] == [(v4 + sticky) / 2 for v4, sticky in zip(rescored["null"], rescored["sticky"])]
    assert both["chosen"] == int(np.argmax(both["rescored"]))


def test_selection_rescores_the_top_candidates_plays_the_best_and_is_the_same_under_mpirun_and_after_a_cut(world, tmp_path):
    from worldmodels.rundir import controller_from

    args = ["--config", SMOKE, "controller.generations=3", "controller.select=3", "controller.select_rollouts=3"]
    one, two = copy_world(world, tmp_path / "one"), copy_world(world, tmp_path / "two")
    out = run_cli("train-controller", *args, "--run-dir", one)
    assert "re-scored on 3 episodes each" in out.stderr, out.stderr
    final = last_checkpoint(one)
    history, selection = final["history"], final["selection"]
    fitness = sorted((f for f in final["top_fitness"].tolist()), reverse=True)
    assert fitness == selection["fitness"] and len(fitness) == 3 and fitness[0] == final["best_fitness"]
    assert selection["chosen"] == int(np.argmax(selection["rescored"]))
    assert history[-1]["selected_rescored"] == max(selection["rescored"])
    assert torch.equal(final["selected"], final["top"][selection["chosen"]])
    assert torch.equal(final["top"][0], final["best"])  # the highest fitness heads the top candidates
    cfg = config.load(SMOKE, ["controller.select=3"])
    size = int(final["size"])
    path = one / "checkpoints" / "controller" / "step-000000003.pt"
    assert np.array_equal(controller_from(path, cfg, size), final["selected"].double().numpy())  # what evaluate plays
    mean = config.load(SMOKE, ["controller.select=3", "evaluate.controller=mean"])
    assert np.array_equal(controller_from(path, mean, size), final["mean"].double().numpy())
    # two ranks split the selection's episodes their own way; a cut during the selection (the last
    # generation's checkpoint not yet written) replays the last generation and selects the same
    proc = mpirun(2, "train-controller", *args, "--run-dir", two)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert path.read_bytes() == (two / path.relative_to(one)).read_bytes()
    for leftover in (two / "checkpoints" / "controller").glob("step-000000003.*"):
        leftover.unlink()
    assert "resuming after generation 2" in run_cli("train-controller", *args, "--run-dir", two).stderr
    assert path.read_bytes() == (two / path.relative_to(one)).read_bytes()  # the CMA-ES read back pickles alike
    refused = run_cli("train-controller", *args, "--run-dir", tmp_path / "dream", "controller.mode=dream", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "controller.select" in refused.stderr, refused.stderr
    assert not (tmp_path / "dream").exists()
