"""The image `make container-test` builds, exercised from the host: the test subset and the smoke
pipeline inside it (no network, read-only image, run directory bind-mounted), and a Slurm job
that runs inside it, is preempted, requeues itself from outside the container and resumes."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, SMOKE, assert_same_store, job_ids, log_text, run_cli, scontrol, wait_done, wait_for

pytestmark = pytest.mark.container
# what runs inside the image: the fast tests of every library layer
IMAGE_TESTS = ["test_config.py", "test_envs.py", "test_dataset.py", "test_models.py"]
SLURM_RUN = ["env.max_steps=400", "collect.episodes=12"]


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ.get("WORLDMODELS_TEST_IMAGE")
    if not name:
        pytest.fail("the container tests need an image: run `make container-test`, which builds one")
    return name


def in_image(image: str, *command: str, binds: tuple[Path, ...] = (), timeout: float = 900):
    bind_args = [arg for path in binds for arg in ("--bind", str(path))]
    return subprocess.run([str(ROOT / "containers" / "run.sh"), *bind_args, image, *command], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "CONTAINER_NETWORK": "none"}, cwd=ROOT)


def test_the_image_is_read_only_has_no_network_and_runs_its_own_code(image, tmp_path):
    probe = ("import os, socket, worldmodels; print(worldmodels.__file__); print(os.getuid()); "
             "print(sorted(n for _, n in socket.if_nameindex())); open('probe', 'w')")
    proc = in_image(image, "python", "-c", probe)
    assert proc.returncode != 0 and "Read-only file system" in proc.stderr
    proc = in_image(image, "python", "-c", probe.replace("open('probe', 'w')", "open('/usr/probe', 'w')"))
    assert "Read-only file system" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("/opt/venv/")  # never the bind-mounted checkout
    assert lines[1] == str(os.getuid())
    assert lines[2] == "['lo']"


def test_the_test_subset_passes_inside_the_image(image):
    tests = [f"/opt/worldmodels/tests/{name}" for name in IMAGE_TESTS]
    # tensorstore is a development dependency, to prove the store is readable without this package
    proc = in_image(image, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not tensorstore", *tests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def test_make_demo_runs_the_smoke_pipeline_inside_the_image(image, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(["make", "demo", f"CONTAINER={image}", f"CONFIG={SMOKE}", f"RUN_DIR={run}", "JOBS=2"],
                          capture_output=True, text=True, timeout=1200, cwd=ROOT,
                          env={**os.environ, "CONTAINER_NETWORK": "none"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = json.loads(run_cli("status", run, "--json").stdout)
    assert {name: s["state"] for name, s in status["stages"].items()} == dict.fromkeys(status["stages"], "done")
    results = json.loads((run / "eval" / "results.json").read_text())
    assert {"controller", "random", "heuristics", "scores", "seeds"} <= results.keys()
    assert (run / "report" / "index.html").is_file() and list((run / "eval" / "videos").glob("*.mp4"))
    owners = {p.stat().st_uid for p in run.rglob("*")}
    assert owners == {os.getuid()}, "files written in the container belong to someone else"
    # the image collects exactly what the host collects from the same config
    host = tmp_path / "host"
    run_cli("collect", "--config", SMOKE, "--run-dir", host)
    assert_same_store(host / "data" / "rollouts.zarr", run / "data" / "rollouts.zarr")


def test_a_containerized_slurm_job_is_preempted_and_resumes(image, cluster, tmp_path):
    run = tmp_path / "slurm"
    proc = subprocess.run(["make", "submit-collect", f"CONTAINER={image}", f"CONFIG={SMOKE}", f"RUN_DIR={run}",
                           f"OVERRIDES={' '.join(SLURM_RUN)}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = job_ids(run, "collect")
    target = ids[0]
    from worldmodels.dataset import EpisodeStore

    store = run / "data" / "rollouts.zarr"
    # the preempted task must have committed episodes of its own (task 0 owns every len(ids)-th one)
    wait_for(lambda: store.exists() and (EpisodeStore.open(store).lengths()[::len(ids)] > 0).sum() >= 1, timeout=300,
             what="collect progress of the task to preempt")
    subprocess.run(["scancel", "--signal=USR2", target], check=True)
    wait_for(lambda: scontrol(target).get("Restarts") == "1", timeout=120, what="requeue")
    wait_done(run, ids)
    log = log_text(run, target)
    assert re.search(rf"attempt 1 \(restart count 0\) on \S+ in container {re.escape(image)}", log)
    assert "requeueing Slurm job" in log
    assert re.search(r"attempt 2 \(restart count 1\)(.|\n)*: [1-9]\d*/\d+ episodes already done", log), log[-2000:]
    reference = tmp_path / "reference"
    run_cli("collect", "--config", SMOKE, "--run-dir", reference, *SLURM_RUN)
    assert_same_store(reference / "data" / "rollouts.zarr", store)
