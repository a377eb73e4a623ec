"""The Slurm layer on a real single-node cluster (slurm/local-cluster.sh): arrays, MPI under
srun --mpi=pmix, real preemption and requeue for every stage, the chained pipeline."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SMOKE, assert_same_store, job_ids, log_text, run_cli, scontrol, wait_done, wait_for
from worldmodels.checkpoint import load_file
from worldmodels.stages import STAGES as REGISTRY, chain

LOCAL = ROOT / "slurm" / "profiles" / "local.yaml"
# one config for the whole Slurm run: enough work per stage to be preempted half-way
RUN = ["env.max_steps=400", "collect.episodes=12", "vae.steps=60", "encode.batch_size=1", "mdnrnn.steps=400",
       "controller.generations=6", "evaluate.episodes=6", "train.log_every_steps=1"]
STAGES = [stage for stage in REGISTRY if stage != "report"]  # every stage, from the registry


def submit(run: Path, stage: str, *extra: str, profile: Path = LOCAL) -> subprocess.CompletedProcess:
    return run_cli("submit", stage, "--config", SMOKE, "--run-dir", run, "--profile", profile, *RUN, *extra, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run, uninterrupted and local: what every Slurm stage must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    for stage in STAGES:
        run_cli(stage, "--config", SMOKE, "--run-dir", run, *RUN)
    return run


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm") / "run"


def progress(run: Path, stage: str) -> int:
    """How far a stage has come, read from its artifacts; for array stages, how far task 0 has
    come (the task the test preempts, of 2)."""
    if stage in ("collect", "encode"):  # task 0 of 2 owns episodes 0, 2, 4, ...
        from worldmodels.dataset import EpisodeStore

        path = run / "data" / ("rollouts.zarr" if stage == "collect" else "latents.zarr")
        return int((EpisodeStore.open(path).lengths()[0::2] > 0).sum()) if path.exists() else 0
    if stage == "evaluate":
        return sum(len(json.loads(p.read_text())) for p in (run / "eval" / "parts").glob("*.task0-of-*.json"))
    if stage == "train-controller":
        return len(list((run / "checkpoints" / "controller").glob("*.json")))
    path = run / "logs" / f"{stage}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


THRESHOLD = {"collect": 2, "train-vae": 5, "encode": 2, "train-mdnrnn": 20, "train-controller": 2, "evaluate": 2}


@pytest.mark.parametrize("stage", STAGES)
def test_preempted_job_requeues_itself_resumes_and_ends_identical(cluster, reference, slurm_run, stage):
    proc = submit(slurm_run, stage)
    assert proc.returncode == 0, proc.stderr
    ids = job_ids(slurm_run, stage)
    if stage in ("collect", "encode", "evaluate"):
        assert len(ids) == 2 and all("_" in i for i in ids)  # an array job, one task per share
    wait_for(lambda: progress(slurm_run, stage) >= THRESHOLD[stage], what=f"{stage} progress")
    target = ids[0]
    subprocess.run(["scancel", "--signal=USR2", target], check=True)
    wait_for(lambda: scontrol(target).get("Restarts") == "1", timeout=60, what="requeue")
    wait_done(slurm_run, ids)
    assert scontrol(target)["Restarts"] == "1"
    log = log_text(slurm_run, target)
    assert "attempt 2 (restart count 1)" in log
    resumed = re.search(r"resuming (from step|after generation) [1-9]", log) or re.search(r"attempt 2.*\n.*: [1-9]\d*/\d+ \w+ already done", log)
    assert resumed, f"{stage} started over after the requeue:\n{log[-2000:]}"
    check_identical(reference, slurm_run, stage)


def check_identical(reference: Path, run: Path, stage: str) -> None:
    if stage in ("collect", "encode"):
        name = "rollouts.zarr" if stage == "collect" else "latents.zarr"
        assert_same_store(reference / "data" / name, run / "data" / name)
    elif stage in ("train-vae", "train-mdnrnn", "train-controller"):
        directory = stage.removeprefix("train-")
        a, b = (load_file(sorted((r / "checkpoints" / directory).glob("*.pt"))[-1]) for r in (reference, run))
        if stage == "train-controller":
            assert a["history"] == b["history"] and torch.equal(a["mean"], b["mean"])
        else:
            for key in a["model"]:
                assert torch.equal(a["model"][key], b["model"][key]), key
    else:
        a, b = (json.loads((r / "eval" / "results.json").read_text()) for r in (reference, run))
        for key in ("scores", "random", "heuristics", "seeds"):
            assert a[key] == b[key], key


def test_controller_runs_as_two_mpi_tasks_under_srun_pmix(cluster, slurm_run):
    # the preemption test above ran train-controller with the local profile: 2 tasks, --mpi=pmix
    log = "".join(p.read_text() for p in (slurm_run / "slurm").glob(f"{job_ids(slurm_run, 'train-controller')[0]}/*_log.err"))
    assert "2 rank(s)" in log
    script = next((slurm_run / "slurm").glob(f"{job_ids(slurm_run, 'train-controller')[0]}/*_submission.sh")).read_text()
    assert "--mpi=pmix" in script and "--ntasks-per-node=2" in script


def test_report_job_and_status_show_the_jobs(cluster, slurm_run):
    assert submit(slurm_run, "report").returncode == 0
    wait_done(slurm_run, job_ids(slurm_run, "report"))
    assert (slurm_run / "report" / "index.html").is_file()
    status = json.loads(run_cli("status", slurm_run, "--json").stdout)["stages"]
    assert all(status[s]["state"] == "done" for s in STAGES + ["report"])
    preempted = status["evaluate"]["jobs"][0]  # the most recent stage the preemption test requeued
    assert preempted["restarts"] == 1 and preempted["state"] == "COMPLETED"
    assert status["report"]["jobs"][0]["state"] == "COMPLETED"


def test_submit_pipeline_runs_every_stage_through_dependencies(cluster, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", run, "--profile", LOCAL, check=False)
    assert proc.returncode == 0, proc.stderr
    for stage in STAGES + ["report"]:
        assert f"{stage}: submitted" in proc.stdout
    ids = [i for stage in STAGES + ["report"] for i in job_ids(run, stage)]
    assert "afterok:" in scontrol(job_ids(run, "report")[0]).get("Dependency", "") or \
        scontrol(job_ids(run, "report")[0]).get("JobState") in ("RUNNING", "COMPLETED")
    wait_done(run, ids, timeout=600)
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["episodes"] == 4 and (run / "report" / "index.html").is_file()


def test_an_array_larger_than_max_array_size_is_chunked(cluster, tmp_path, monkeypatch):
    from jobs import submit as submit_module
    from jobs.profile import ClusterInfo, load_profile
    from worldmodels import config

    real = submit_module.cluster_info()
    monkeypatch.setattr(submit_module, "cluster_info", lambda: ClusterInfo(real.partitions, real.default_partition, 3))
    profile_path = tmp_path / "p.yaml"
    profile_path.write_text("default:\n  array_tasks: 5\n  time_min: 5\n")
    cfg = config.load(SMOKE, ["collect.episodes=5"])
    ids = submit_module.submit(cfg, tmp_path / "run", ["collect"], load_profile(profile_path))["collect"]
    assert len(ids) == 5 and len({i.split("_")[0] for i in ids}) == 3  # arrays of 2, 2 and 1 tasks
    wait_done(tmp_path / "run", ids)
    assert json.loads(run_cli("status", tmp_path / "run", "--json").stdout)["stages"]["collect"]["state"] == "done"
    # five array tasks in three arrays collect exactly what one local process collects
    run_cli("collect", "--config", SMOKE, "--run-dir", tmp_path / "local", "collect.episodes=5")
    assert_same_store(tmp_path / "local" / "data" / "rollouts.zarr", tmp_path / "run" / "data" / "rollouts.zarr")


@pytest.mark.parametrize("profile, message", [
    ("default:\n  partion: debug\n", "unknown profile key 'default.partion'"),
    ("default:\n  partition: nosuchpartition\n", "partition 'nosuchpartition' for collect does not exist"),
    ("default:\n  cpus_per_task: 64\n", "asks for 64 CPUs per node"),
    ("default:\n  gpus_per_node: 1\n", "asks for 1 GPUs per node"),
    ("default:\n  partition: 'debug; touch /tmp/wm-pwned'\n", "characters Slurm options may not hold"),
    ("stages:\n  train-vae:\n    nodes: 2\n", "only train-controller runs on several nodes"),
    ("default:\n  time_min: 0\n", "time_min=0"),
])
def test_bad_profiles_are_refused_before_anything_is_submitted(cluster, tmp_path, profile, message):
    path = tmp_path / "bad.yaml"
    path.write_text(profile)
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    proc = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", tmp_path / "run", "--profile", path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "run").exists() and not Path("/tmp/wm-pwned").exists()
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before


def test_a_stage_submitted_before_its_inputs_exist_is_refused(cluster, tmp_path):
    proc = run_cli("submit", "train-vae", "--config", SMOKE, "--run-dir", tmp_path / "run", "--profile", LOCAL, check=False)
    assert proc.returncode == 2 and "train-vae needs collect done first" in proc.stderr
    assert not (tmp_path / "run" / "slurm").exists()


def test_config_values_never_reach_the_shell_of_the_rendered_script(tmp_path):
    marker = tmp_path / "pwned"
    proc = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", tmp_path / "run", "--profile", LOCAL,
                   f"logging.project=$(touch {marker})", "--dry-run")
    assert "touch" not in proc.stdout and not marker.exists()


@pytest.mark.parametrize("profile", ["local", "example-cluster"])
def test_rendered_sbatch_scripts_match_the_checked_in_ones(profile, tmp_path):
    proc = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", "/RUN_DIR", "--profile",
                   ROOT / "slurm" / "profiles" / f"{profile}.yaml", "--dry-run")
    import sys

    rendered = proc.stdout.replace(sys.executable, "PYTHON")
    golden = ROOT / "tests" / "golden" / f"{profile}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), "rendered scripts changed; review and rerun with UPDATE_GOLDEN=1"


def test_a_second_local_cluster_is_refused_while_one_runs(cluster, tmp_path):
    proc = subprocess.run([str(ROOT / "slurm" / "local-cluster.sh"), "up"], capture_output=True, text=True,
                          env={**os.environ, "SLURM_LOCAL_DIR": str(tmp_path / "other")}, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"a local cluster from {ROOT} is already running" in proc.stderr
    assert not (tmp_path / "other").exists()


def test_a_sweep_runs_as_array_jobs_survives_a_preempted_point_and_compares_over_seeds(cluster, tmp_path):
    base = tmp_path / "base"
    for stage in chain("train-mdnrnn"):
        run_cli(stage, "--config", SMOKE, "--run-dir", base)
    sweep = tmp_path / "sweep"
    proc = run_cli("sweep", "--config", SMOKE, "--sweep-dir", sweep, "--from", base, "controller.generations=8",
                   "--grid", "controller.mode=real,dream", "controller.seed=1,2,3", "--executor", "slurm", "--profile", LOCAL)
    assert "collect: nothing to submit" in proc.stdout and "train-controller: submitted 6 tasks for 6 points" in proc.stdout
    points = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "slurm")
    assert [p.name for p in points] == [f"mode={m}_seed={s}" for m in ("dream", "real") for s in (1, 2, 3)]
    controllers = [job_ids(p, "train-controller")[0] for p in points]
    assert len({i.split("_")[0] for i in controllers}) == 1  # one array across the points
    target, first = controllers[3], points[3]  # mode=real_seed=1: the array's first task
    wait_for(lambda: len(list((first / "checkpoints" / "controller").glob("*.json"))) >= 2, what="controller progress")
    # USR2 to the task's job step (its ranks), as Slurm's warning before a time limit: for a task of
    # this array, scancel of the whole job answers "job can not be altered now" (Slurm 22.05) and
    # retries for a minute, long enough to signal the requeued attempt a second time
    subprocess.run(["scancel", "--signal=USR2", f"{scontrol(target)['JobId']}.0"], check=True, timeout=30)
    wait_for(lambda: scontrol(target).get("Restarts") == "1", timeout=60, what="requeue")
    ids = [i for p in points for stage in ("train-controller", "evaluate", "report") for i in job_ids(p, stage)]
    wait_done(sweep, ids)
    assert re.search(r"resuming after generation [1-9]", log_text(sweep, target)), log_text(sweep, target)[-2000:]
    view = json.loads(run_cli("status", sweep, "--json").stdout)["sweep"]["points"]
    assert all(v["stages"][s]["state"] == "done" for v in view.values() for s in STAGES + ["report"])
    assert all(v["stages"]["train-vae"]["reused_from"] == str(base.resolve()) for v in view.values())
    run_cli("compare", sweep)
    summary = json.loads((sweep / "compare" / "results.json").read_text())
    assert sorted(p["point"] for p in summary["points"]) == ["controller.mode=dream", "controller.mode=real"]
    for p in summary["points"]:
        assert len(p["scores"]) == 3 and p["ci_low"] <= p["mean"] <= p["ci_high"], p
