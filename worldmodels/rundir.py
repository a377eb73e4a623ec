"""The run directory is the run's identity: its saved config, its stage states, atomic files.

The first start of any stage saves the resolved config as RUN_DIR/config.yaml; every later
start must resolve to the same config, so rerunning a command resumes it and a different
config can never mix its artifacts into the run. Stage states live in RUN_DIR/state/ and are
what `status` reads next to the artifacts.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from worldmodels import config as config_lib
from worldmodels.config import Config
from worldmodels.errors import ConfigError

CONFIG_FILE = "config.yaml"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def saved_config(run_dir: str | Path) -> Config | None:
    """The config a run directory was started with, or None for a new directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    return config_lib.from_dict(yaml.safe_load(path.read_text()) or {})


def prepare(run_dir: str | Path, cfg: Config) -> Path:
    """Create or reopen `run_dir` for `cfg`; refuse a directory that was started with another config."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root everywhere; only a real write proves the directory usable.
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
    path = run_dir / CONFIG_FILE
    given = config_lib.to_dict(cfg)
    if path.is_file():
        saved = yaml.safe_load(path.read_text()) or {}
        differences = config_lib.diff(saved, given)
        if differences:
            raise ConfigError(f"run directory {run_dir} was started with another config ({'; '.join(differences)}); "
                              "use a new run directory or the saved config")
    else:
        atomic_write(path, config_lib.dump(cfg).encode())
    return run_dir


def checkpoint_dir(run_dir: str | Path, stage: str) -> Path:
    """Where a training stage keeps its checkpoints: RUN_DIR/checkpoints/{vae,mdnrnn,controller}."""
    return Path(run_dir) / "checkpoints" / stage.removeprefix("train-")


def group_name(run_dir: str | Path) -> str:
    """A stable name for everything logged from one run directory (its wandb group)."""
    import hashlib

    resolved = str(Path(run_dir).resolve())
    return f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def run_id(run_dir: str | Path, name: str) -> str:
    """A stable wandb run id for one stage (or task) of a run directory: every attempt, requeued
    or rerun by hand, resumes the same wandb run, and its step axis continues."""
    import hashlib

    key = f"{Path(run_dir).resolve()}\0{name}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


# --- stage states -------------------------------------------------------------------------------

STALE_AFTER_S = 120.0  # a "running" state not refreshed for this long is reported as interrupted


def state_path(run_dir: str | Path, stage: str, task: int | None = None) -> Path:
    name = stage if task is None else f"{stage}.task{task}"
    return Path(run_dir) / "state" / f"{name}.json"


def write_state(run_dir: str | Path, stage: str, state: str, task: int | None = None, **extra: Any) -> None:
    """Record a stage's (or one task's) state: running, done, interrupted or failed."""
    record = {"state": state, "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time(), **extra}
    atomic_write(state_path(run_dir, stage, task), json.dumps(record).encode())


def read_states(run_dir: str | Path, stage: str) -> list[dict[str, Any]]:
    """Every state record of a stage (one per task), with stale "running" ones marked interrupted."""
    records = []
    for path in sorted((Path(run_dir) / "state").glob(f"{stage}*.json")):
        if path.name != f"{stage}.json" and not path.name.startswith(f"{stage}.task"):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("state") == "running" and time.time() - record.get("updated", 0) > STALE_AFTER_S:
            record["state"] = "interrupted"
        records.append(record)
    return records
