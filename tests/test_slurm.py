"""The Slurm layer on a real cluster of three nodes with accounting (slurm/local-cluster.sh): arrays,
MPI across nodes under srun --mpi=pmix, real preemption and requeue for every stage, node loss, a
hung rank, the chained pipeline, status from sacct."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, SMOKE, assert_same_store, job_ids, log_text, run_cli, scontrol, wait_done, wait_for
from jobs import mpi_start
from worldmodels import config, identity
from worldmodels.checkpoint import load_file
from worldmodels.stages import STAGES as REGISTRY, chain

LOCAL = ROOT / "slurm" / "profiles" / "local.yaml"
# one config for the whole Slurm run: enough work per stage to be preempted half-way
RUN = ["env.max_steps=400", "collect.episodes=8", "vae.steps=60", "encode.batch_size=1", "mdnrnn.steps=300",
       "controller.generations=6", "evaluate.episodes=6", "train.log_every_steps=1"]
STAGES = [stage for stage in REGISTRY if stage != "report"]  # every stage, from the registry


CLUSTER = ROOT / "slurm" / "local-cluster.sh"


def submit(run: Path, stage: str, *extra: str, profile: Path = LOCAL) -> subprocess.CompletedProcess:
    return run_cli("submit", stage, "--config", SMOKE, "--run-dir", run, "--profile", profile, *RUN, *extra, check=False)


def controller_profile(folder: Path, nodes: int) -> Path:
    """The local profile with train-controller on `nodes` nodes, one rank each."""
    profile = yaml.safe_load(LOCAL.read_text())
    profile["stages"]["train-controller"].update(nodes=nodes, tasks_per_node=1)
    path = folder / f"controller-{nodes}-nodes.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


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
    if stage == "train-controller":  # the newest generation checkpointed
        return checkpointed(run, stage)
    path = run / "logs" / f"{stage}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def checkpointed(run: Path, stage: str) -> int:
    """The step (generation) of a training stage's newest checkpoint, 0 before the first."""
    folder = run / "checkpoints" / stage.removeprefix("train-")
    return max((int(p.stem.split("-")[1]) for p in folder.glob("step-*.json")), default=0)


THRESHOLD = {"collect": 2, "train-vae": 5, "encode": 2, "train-mdnrnn": 20, "train-controller": 2, "evaluate": 2}


@pytest.mark.parametrize("stage", STAGES)
def test_preempted_job_requeues_itself_resumes_and_ends_identical(cluster, reference, slurm_run, stage, tmp_path):
    # train-controller runs one rank on each of the three nodes: its checkpoint must be one process's
    profile = controller_profile(tmp_path, 3) if stage == "train-controller" else LOCAL
    proc = submit(slurm_run, stage, profile=profile)
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
        paths = [sorted((r / "checkpoints" / directory).glob("*.pt"))[-1] for r in (reference, run)]
        if stage == "train-controller":  # the same file: CMA-ES's state is pickled by value (cma_internals)
            assert paths[0].read_bytes() == paths[1].read_bytes()
        else:
            a, b = map(load_file, paths)
            for key in a["model"]:
                assert torch.equal(a["model"][key], b["model"][key]), key
    else:
        a, b = (json.loads((r / "eval" / "results.json").read_text()) for r in (reference, run))
        for key in ("scores", "random", "heuristics", "seeds"):
            assert a[key] == b[key], key


def test_controller_ran_one_rank_on_each_of_three_nodes_under_srun_pmix(cluster, slurm_run):
    # the preemption test above ran train-controller on 3 nodes x 1 task, --mpi=pmix
    log = log_text(slurm_run, job_ids(slurm_run, "train-controller")[0])
    assert "3 rank(s) on n1, n2, n3" in log
    script = next((slurm_run / "slurm").glob(f"{job_ids(slurm_run, 'train-controller')[0]}/*_submission.sh")).read_text()
    assert "--mpi=pmix" in script and "--nodes=3" in script and "--ntasks-per-node=1" in script


def test_report_job_and_status_show_the_jobs(cluster, slurm_run):
    assert submit(slurm_run, "report").returncode == 0
    wait_done(slurm_run, job_ids(slurm_run, "report"))
    assert (slurm_run / "report" / "index.html").is_file()
    view = lambda: json.loads(run_cli("status", slurm_run, "--json").stdout)["stages"]  # noqa: E731
    # accounting lags the scheduler by a second or two
    wait_for(lambda: view()["report"]["jobs"][0]["state"] == "COMPLETED", timeout=30, what="report COMPLETED in sacct")
    status = view()
    assert all(status[s]["state"] == "done" for s in STAGES + ["report"])
    preempted = status["evaluate"]["jobs"][0]  # the most recent stage the preemption test requeued
    assert preempted["source"] == "sacct" and preempted["restarts"] == 1 and preempted["state"] == "COMPLETED"
    assert [a["state"] for a in preempted["attempts"]] == ["REQUEUED", "COMPLETED"], preempted
    assert preempted["attempts"][-1]["exit_code"] == "0:0" and preempted["attempts"][-1]["nodes"].startswith("n")
    # the tasks of an array, started together, run on different nodes
    assert len({job["attempts"][0]["nodes"] for job in status["collect"]["jobs"]}) == 2, status["collect"]


def node_of(job_id: str) -> str:
    return scontrol(job_id)["BatchHost"]


def cluster_cmd(*args: str) -> None:
    subprocess.run([str(CLUSTER), *args], check=True, capture_output=True, timeout=60)


def node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True, text=True).stdout.strip()


def lose_node(job_id: str, how: str = "kill") -> tuple[str, float]:
    """Kill every process of the node running the job (or cut its link); returns the node and
    the seconds from the loss until the job runs again elsewhere. The node comes back after."""
    node, start, restarts = node_of(job_id), time.monotonic(), int(scontrol(job_id)["Restarts"])
    cluster_cmd(how, node)
    try:
        wait_for(lambda: int(scontrol(job_id).get("Restarts", 0)) > restarts and scontrol(job_id).get("JobState") == "RUNNING",
                 timeout=150, what=f"{job_id} running again after losing {node}")
        assert node not in scontrol(job_id)["NodeList"]
        return node, time.monotonic() - start
    finally:
        cluster_cmd("revive", node)
        wait_for(lambda: node_state(node) in ("idle", "mix", "alloc"), timeout=60, what=f"{node} back")


def test_losing_a_node_during_collect_then_train_vae_requeues_resumes_and_ends_identical(cluster, reference, tmp_path):
    run = tmp_path / "run"
    assert submit(run, "collect").returncode == 0
    ids = job_ids(run, "collect")
    wait_for(lambda: progress(run, "collect") >= THRESHOLD["collect"], what="collect progress")
    node, took = lose_node(ids[0])
    print(f"collect: {node} lost, running again after {took:.0f} s")
    wait_done(run, ids)
    assert_same_store(reference / "data" / "rollouts.zarr", run / "data" / "rollouts.zarr")  # none lost, none twice

    # a lost node saves nothing: what survives is the last checkpoint
    assert submit(run, "train-vae", "train.checkpoint_every_steps=10").returncode == 0
    vae = job_ids(run, "train-vae")[0]
    wait_for(lambda: checkpointed(run, "train-vae") >= 10, what="a train-vae checkpoint")
    node, took = lose_node(vae)
    print(f"train-vae: {node} lost, running again after {took:.0f} s")
    wait_done(run, [vae])
    assert re.search(r"resuming from step [1-9]", log_text(run, vae)), log_text(run, vae)[-2000:]
    check_identical(reference, run, "train-vae")

    view = lambda: json.loads(run_cli("status", run, "--json").stdout)["stages"]  # noqa: E731
    wait_for(lambda: view()["train-vae"]["jobs"][0]["state"] == "COMPLETED", timeout=30, what="train-vae in sacct")
    for stage, job in (("collect", view()["collect"]["jobs"][0]), ("train-vae", view()["train-vae"]["jobs"][0])):
        assert [a["state"] for a in job["attempts"]] == ["NODE_FAIL", "COMPLETED"] and job["restarts"] == 1, (stage, job)


def failing_first_mpi_start(folder: Path) -> Path:
    """The local profile where train-controller's first attempt fails in MPI_Init, for real: Open MPI
    is told to use a messaging layer that does not exist."""
    profile = yaml.safe_load(LOCAL.read_text())
    first_only = '[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] || export OMPI_MCA_pml=no-such-layer'
    profile["stages"]["train-controller"]["setup"] = [*profile["default"]["setup"], first_only]
    path = folder / "failing-first-mpi-start.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_a_failed_mpi_start_a_hung_rank_then_a_cut_link_during_train_controller_each_requeue_and_it_ends_with_the_checkpoint_one_process_writes(
        cluster, reference, tmp_path):
    # the controller of another seed, branched from the reference's V and M, uninterrupted and local
    seed = ["controller.seed=5", "controller.generations=8"]
    alone = tmp_path / "alone"
    # a guard against a hang, not a time limit: on a slow day beside another test worker this took 300 s
    run_cli("train-controller", "--config", SMOKE, "--run-dir", alone, "--from", reference, *RUN, *seed, timeout=900)
    run = tmp_path / "run"
    proc = submit(run, "train-controller", "--from", str(reference), *seed, "controller.heartbeat_s=5",
                  profile=failing_first_mpi_start(tmp_path))
    assert proc.returncode == 0, proc.stderr
    job = job_ids(run, "train-controller")[0]

    # the ranks of the first attempt die in MPI_Init: having run nothing of the stage, the job is requeued
    wait_for(lambda: scontrol(job).get("Restarts") == "1", timeout=120, what="requeue after a failed MPI start")
    assert "a rank died while MPI started (1 time(s), at most 3): requeueing" in log_text(run, job)
    wait_for(lambda: progress(run, "train-controller") >= 2, what="controller progress")

    # a rank stops (SIGSTOP) on a live node: the heartbeat stops the job within its bound, which requeues
    other = next(n for n in ("n1", "n2", "n3") if n in expand(scontrol(job)["NodeList"]) and n != node_of(job))
    ranks = [p for p in cluster_pids(other) if "submitit" in Path(f"/proc/{p}/cmdline").read_text()]
    os.kill(ranks[0], signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: scontrol(job).get("Restarts") == "2", timeout=60, what="requeue after a hung rank")
    print(f"hung rank: requeued after {time.monotonic() - stopped:.0f} s (heartbeat 5 s)")
    assert re.search(rf"rank \d on {other} sent no heartbeat for 5 s", log_text(run, job)), log_text(run, job)[-2000:]
    assert time.monotonic() - stopped < 5 + 30

    # then a node drops off the network under the requeued job
    wait_for(lambda: scontrol(job).get("JobState") == "RUNNING" and progress(run, "train-controller") >= 4,
             timeout=120, what="progress after the requeue")
    node, took = lose_node(job, how="cut")
    print(f"train-controller: {node} cut off, running again after {took:.0f} s")
    wait_done(run, [job])
    assert len(re.findall(r"resuming after generation [1-9]", log_text(run, job))) == 2, log_text(run, job)[-3000:]
    check_identical(alone, run, "train-controller")


def expand(nodelist: str) -> list[str]:
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True).stdout.split()


def cluster_pids(node: str) -> list[int]:
    out = subprocess.run([str(CLUSTER), "pids", node], capture_output=True, text=True, timeout=30).stdout
    return [int(p) for p in out.split()]


def test_submit_pipeline_runs_every_stage_of_every_round_through_dependencies(cluster, tmp_path):
    run, later = tmp_path / "run", tmp_path / "run" / "rounds" / "1"
    proc = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", run, "--profile", LOCAL, "rounds.count=2",
                   "evaluate.videos=0", check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": submitted") == 2 * len(REGISTRY) and "round 1:" in proc.stdout
    # round 1 starts once round 0's controller is trained, beside round 0's evaluation; its evaluation
    # waits for round 0's (whose baseline scores it takes) and for its own controller
    controller, evaluate = job_ids(run, "train-controller")[0], job_ids(run, "evaluate")[0].split("_")[0]
    assert re.fullmatch(rf"afterok:{controller}\(\w+\)", scontrol(job_ids(later, "collect")[0])["Dependency"])
    waits = re.findall(r"afterok:(\d+)", scontrol(job_ids(later, "evaluate")[0])["Dependency"])
    assert sorted(waits) == sorted([evaluate, job_ids(later, "train-controller")[0]])
    ids = [i for r in (run, later) for stage in REGISTRY for i in job_ids(r, stage)]
    wait_done(run, ids, timeout=900)
    assert "baseline episodes taken from" in "".join(log_text(later, i) for i in job_ids(later, "evaluate"))
    for r in (run, later):
        assert json.loads((r / "eval" / "results.json").read_text())["episodes"] == 4
        assert (r / "report" / "index.html").is_file()
    status = run_cli("status", run).stdout
    assert "round 1: run" in status and len(re.findall(r"report +done", status)) == 2, status
    jobs = [(r / "slurm" / "jobs.json").read_text() for r in (run, later)]
    again = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", run, "--profile", LOCAL, "rounds.count=2",
                    "evaluate.videos=0")
    assert again.stdout.count("finished already, not submitted") == 2 * len(REGISTRY) and "submitted" not in \
        again.stdout.replace("not submitted", "")
    assert [(r / "slurm" / "jobs.json").read_text() for r in (run, later)] == jobs
    # a later round refused (here: its directory cannot be made) is refused before any round's jobs are submitted
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "rounds").write_text("a file where round 1's folder would go")
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    refused = run_cli("submit", "pipeline", "--config", SMOKE, "--run-dir", fresh, "--profile", LOCAL, "rounds.count=2",
                      check=False)
    assert refused.returncode == 2 and "rounds/1 is not writable" in refused.stderr and "submitted" not in refused.stdout
    assert not (fresh / "slurm").exists() and not (fresh / "config.yaml").exists()
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before


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


def test_a_stage_submitted_before_its_inputs_exist_or_with_a_config_it_cannot_run_is_refused(cluster, tmp_path):
    proc = run_cli("submit", "train-vae", "--config", SMOKE, "--run-dir", tmp_path / "run", "--profile", LOCAL, check=False)
    assert proc.returncode == 2 and "train-vae needs collect done first (collect is pending" in proc.stderr
    assert not (tmp_path / "run").exists()  # a mistyped run directory is not made
    proc = submit(tmp_path / "run", "pipeline", "env.id=NoSuchGame-v4")  # refused now, not when the job starts
    assert proc.returncode == 2 and "unknown environment 'NoSuchGame-v4'" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_stage_whose_jobs_are_not_over_is_not_submitted_again_nor_is_the_pipeline_sbatch_refused_midway(
        cluster, tmp_path):
    from jobs.status import not_over

    profile = yaml.safe_load(LOCAL.read_text())
    profile["default"]["extra_sbatch"] = ["begin=now+3600"]  # held in the queue for an hour
    held = tmp_path / "held.yaml"
    held.write_text(yaml.safe_dump(profile))
    profile["stages"]["train-vae"]["extra_sbatch"] = ["begin=no-such-time"]  # sbatch refuses it
    refusing = tmp_path / "refusing.yaml"
    refusing.write_text(yaml.safe_dump(profile))
    run = tmp_path / "run"
    proc = submit(run, "pipeline", profile=refusing)
    assert proc.returncode == 2 and "error: sbatch refused train-vae's jobs (" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # sbatch's own words only once, in that line
    assert "(Invalid --begin specification)" in proc.stderr and "scancel it, fix the profile" in proc.stderr
    ids, recorded = job_ids(run, "collect"), (run / "slurm" / "jobs.json").read_text()
    assert list(json.loads(recorded)) == ["collect"]  # submitted before the refusal, and kept for status
    try:
        for stage in ("collect", "pipeline"):
            proc = submit(run, stage, profile=held)
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
            assert "collect of" in proc.stderr and "was submitted already and its jobs are not over" in proc.stderr
            assert "PENDING" in proc.stderr and "scancel" in proc.stderr
        assert (run / "slurm" / "jobs.json").read_text() == recorded  # the jobs status follows are kept
    finally:
        subprocess.run(["scancel", *{i.split("_")[0] for i in ids}], check=True, timeout=30)
    wait_for(lambda: not not_over(ids), timeout=60, what="the cancelled jobs to leave the queue")
    proc = submit(run, "collect", profile=held)  # cancelled: it may be submitted again
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["scancel", *{i.split("_")[0] for i in job_ids(run, "collect")}], check=True, timeout=30)


def test_encode_with_a_v_from_elsewhere_is_submitted_once_collect_is_done(cluster, reference, tmp_path):
    # encode.vae reads no train-vae: a branch whose train-vae never ran may submit encode
    vae = sorted((reference / "checkpoints" / "vae").glob("*.pt"))[-1]
    run = tmp_path / "run"
    proc = submit(run, "encode", "--from", reference, "vae.steps=61", f"encode.vae={vae}")
    assert proc.returncode == 0, proc.stderr
    wait_done(run, job_ids(run, "encode"))
    assert_same_store(reference / "data" / "latents.zarr", run / "data" / "latents.zarr")


def test_a_sweep_from_a_run_not_done_is_refused_and_writes_nothing(cluster, tmp_path):
    base, sweep = tmp_path / "base", tmp_path / "sweep"
    identity.begin(config.load(SMOKE), base, "report")  # submitted, nothing done yet
    before = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
    proc = run_cli("sweep", "--config", SMOKE, "--sweep-dir", sweep, "--from", base, "--grid", "controller.seed=1,2",
                   "--executor", "slurm", "--profile", LOCAL, check=False)
    assert proc.returncode == 2 and "its collect has this identity but is not finished" in proc.stderr, proc.stderr
    assert not sweep.exists()  # neither the sweep's file nor any point's records
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout == before


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


def teardown(folder: Path, srun_status: int, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, str]:
    """mpi_start's lines after an srun that exited with `srun_status`, in bash with Slurm's variables
    `env`; scontrol is a shell function that writes what it was asked. Returns the run and that."""
    asked = folder / "asked"
    asked.unlink(missing_ok=True)
    script = "\n".join([f"scontrol() {{ echo \"$*\" > {asked}; }}", f"(exit {srun_status})",
                         *mpi_start.batch_script_lines(str(folder / "%j"))])
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"], **env})
    return proc, asked.read_text().strip() if asked.exists() else ""


@pytest.mark.parametrize("env, job", [({"SLURM_JOB_ID": "57"}, "57"),  # a run's job, and a sweep's array task
                                      ({"SLURM_JOB_ID": "60", "SLURM_ARRAY_JOB_ID": "57", "SLURM_ARRAY_TASK_ID": "2"}, "57_2")])
def test_the_batch_script_requeues_a_job_whose_mpi_start_failed_in_this_attempt_three_times_at_most(tmp_path, env, job):
    folder = tmp_path / job  # submitit's log folder for the job
    folder.mkdir()
    proc, asked = teardown(tmp_path, 1, env)
    assert proc.returncode == 1 and asked == "" and proc.stderr == ""  # no mark: the stage failed, not MPI's start
    mpi_start.mark(folder, 0, 1).touch()  # rank 1 of the first attempt never met the others
    proc, asked = teardown(tmp_path, 0, env)
    assert proc.returncode == 0 and asked == ""  # srun ended well: nothing to do
    proc, asked = teardown(tmp_path, 1, env)
    assert proc.returncode == 1 and asked == f"requeue {job}"
    assert proc.stderr == f"a rank died while MPI started (1 time(s), at most 3): requeueing job {job}\n"
    proc, asked = teardown(tmp_path, 1, {**env, "SLURM_RESTART_COUNT": "1"})  # a later attempt failed otherwise
    assert asked == "" and proc.returncode == 1
    for restart in (1, 2):
        mpi_start.mark(folder, restart, 0).touch()
    proc, asked = teardown(tmp_path, 1, {**env, "SLURM_RESTART_COUNT": "2"})
    assert asked == "" and proc.returncode == 1 and f"MPI failed to start 3 times in job {job}: not requeueing" in proc.stderr


def test_a_second_local_cluster_runs_beside_the_first_and_down_removes_all_of_it(cluster):
    # its munged runs as user munge, which must reach the folder (pytest's are private)
    other = Path(tempfile.mkdtemp(prefix="wm-second-cluster-"))
    other.chmod(0o755)
    script = str(ROOT / "slurm" / "local-cluster.sh")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(other), "SLURM_CONF": str(other / "slurm.conf")}
    try:
        proc = subprocess.run([script, "up", "1"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "1 node(s)" in proc.stdout, proc.stderr
        slot = (other / "slot").read_text().strip()
        ran = subprocess.run(["srun", "-t", "1", "hostname"], capture_output=True, text=True, env=env, timeout=60)
        assert ran.stdout.strip() == "n1", ran.stderr
        wait_for(lambda: "COMPLETED" in subprocess.run(["sacct", "-n", "-X", "-o", "State"], capture_output=True,
                                                       text=True, env=env).stdout, timeout=30, what="the job in sacct")
        assert subprocess.run(["sinfo", "-h", "-o", "%D %t"], capture_output=True, text=True).stdout.split() == ["3", "idle"]
    finally:
        subprocess.run([script, "down"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(other, ignore_errors=True)
    assert not subprocess.run(["pgrep", "-f", str(other)], capture_output=True).stdout
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"wm{slot}-")]
    assert f"wm{slot}br" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert subprocess.run(["sinfo", "-h", "-o", "%D %t"], capture_output=True, text=True).stdout.split() == ["3", "idle"]


def test_a_sweep_runs_as_array_jobs_survives_a_preempted_point_and_compares_over_seeds(cluster, tmp_path):
    base = tmp_path / "base"
    for stage in chain("train-mdnrnn"):
        run_cli(stage, "--config", SMOKE, "--run-dir", base)
    sweep = tmp_path / "sweep"
    proc = run_cli("sweep", "--config", SMOKE, "--sweep-dir", sweep, "--from", base, "controller.generations=8",
                   "--grid", "controller.mode=real,dream", "controller.seed=1,2", "--executor", "slurm", "--profile", LOCAL)
    assert "collect: nothing to submit" in proc.stdout and "train-controller: submitted 4 tasks for 4 points" in proc.stdout
    points = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "slurm")
    assert [p.name for p in points] == [f"mode={m}_seed={s}" for m in ("dream", "real") for s in (1, 2)]
    controllers = [job_ids(p, "train-controller")[0] for p in points]
    assert len({i.split("_")[0] for i in controllers}) == 1  # one array across the points
    target, first = controllers[2], points[2]  # mode=real_seed=1: the array's first task
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
        assert len(p["scores"]) == 2 and p["ci_low"] <= p["mean"] <= p["ci_high"], p
