"""Shared helpers: run the real CLI in a subprocess, read whole stores back, tiny configs, and the
local Slurm cluster (slurm/local-cluster.sh) with ways to watch its jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def pytest_collection_modifyitems(items) -> None:
    """The Slurm tests first: they are the longest file by far (over a third of the suite, much of
    it waiting on the cluster), and `make test` hands whole files to two workers, so the others
    fill the second worker meanwhile instead of leaving the Slurm tests to run alone at the end."""
    items.sort(key=lambda item: item.path.name != "test_slurm.py")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    """Run `python -m worldmodels ARGS` as a user would (with `env` added to the environment);
    returns the finished process."""
    proc = subprocess.run([sys.executable, "-m", "worldmodels", *map(str, args)], capture_output=True,
                          text=True, env={**cli_env(), **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"worldmodels {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "worldmodels", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())


def read_store(path: Path) -> dict[str, np.ndarray]:
    """Every committed row of every array plus the index, keyed by name (for equality checks)."""
    from worldmodels.dataset import EpisodeStore

    store = EpisodeStore.open(path)
    out = {f"index/{k}": v for k, v in store.index().items()}
    for k in store.complete():
        for name, values in store.read_episode(int(k)).items():
            out[f"{k}/{name}"] = values
    return out


def assert_same_store(a: Path, b: Path) -> None:
    left, right = read_store(a), read_store(b)
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file's bytes under `path`, to prove that a refused command touched nothing."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def smoke_cfg():
    from worldmodels import config

    return config.load(SMOKE)


@pytest.fixture(scope="session")
def cluster():
    """The local cluster of three nodes with accounting; started for the session, and stopped after it
    unless it was running before."""
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start a local cluster, which needs root (CI runs as root)")
    conf = ROOT / ".slurm" / "slurm.conf"
    script = str(ROOT / "slurm" / "local-cluster.sh")
    was_running = subprocess.run(["pgrep", "-f", f"slurmctld -f {conf}"], capture_output=True).returncode == 0
    subprocess.run([script, "up", "3"], check=True, capture_output=True, timeout=120)
    os.environ["SLURM_CONF"] = str(conf)
    yield os.environ["SLURM_CONF"]
    if not was_running:
        subprocess.run([script, "down"], check=False, capture_output=True, timeout=120)


def scontrol(job_id: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text.splitlines()[0])) if text.strip() else {}


def job_ids(run: Path, stage: str) -> list[str]:
    return json.loads((run / "slurm" / "jobs.json").read_text())[stage]["ids"]


def log_text(run: Path, job_id: str) -> str:
    return "".join(p.read_text() for p in sorted((run / "slurm").glob(f"{job_id}/*_log.err")))


def wait_done(run: Path, ids: list[str], timeout: float = 900) -> None:
    """Wait for jobs to finish, with a deadline; a failed job fails the test with its log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {i: scontrol(i).get("JobState", "UNKNOWN") for i in ids}
        bad = {i: s for i, s in states.items() if s in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")}
        assert not bad, f"jobs failed: {bad}\n" + "\n".join(log_text(run, i)[-3000:] for i in bad)
        if all(s == "COMPLETED" for s in states.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs {ids} not finished after {timeout} s: {states}")


def wait_for(predicate, timeout: float = 180, what: str = "progress", proc: subprocess.Popen | None = None,
             every: float = 0.1) -> None:
    """Wait until `predicate()` holds, looking every `every` s, with a deadline; `proc`, the process
    expected to make it hold, must still be running (else the test fails with its stderr)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"no {what}: the process ended with exit code {proc.returncode}\n"
                                 + (proc.stderr.read() if proc.stderr else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(every)


def committed(run: Path) -> int:
    """Episodes committed in a run's rollouts so far (0 before the store exists)."""
    from worldmodels.dataset import EpisodeStore

    try:
        return len(EpisodeStore.open(run / "data" / "rollouts.zarr").complete())
    except Exception:  # not made yet, or made as this looks
        return 0
