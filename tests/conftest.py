"""Shared helpers: run the real CLI in a subprocess, read whole stores back, tiny configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m worldmodels ARGS` as a user would; returns the finished process."""
    proc = subprocess.run([sys.executable, "-m", "worldmodels", *map(str, args)], capture_output=True,
                          text=True, env=cli_env(), timeout=timeout)
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
