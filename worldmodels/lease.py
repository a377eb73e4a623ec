"""One writer per stage (per task for split stages): a lease file renewed by a heartbeat.

`RUN_DIR/state/STAGE[.taskN].lease` names its holder (host, PID namespace, pid, Slurm job, and the
digest of the stage's identity it runs with) and when it was last renewed. Why a lease and not a lock: fcntl/flock locks are not reliable on every NFS a cluster
mounts (and a lock held by a dead node may never be released), while two plain file operations
are atomic on every POSIX and NFS file system: `link` (taking a free lease: exactly one of two
racers succeeds) and `rename` (renewing it). A second copy of a running stage is refused naming
the holder. A lease whose holder is gone is taken over safely:
- same host and PID namespace, pid no longer alive: at once (a container with its own PID namespace
  may share the host's name, as with `--network=host`: its pids say nothing here, and the reverse);
- the holder was an earlier attempt of this same Slurm job (a requeue after preemption or a
  node failure; Slurm starts a new attempt only once the old one is gone): at once;
- otherwise once it has not been renewed for EXPIRES_S (a dead node, a vanished process).
The holder renews every HEARTBEAT_S and checks that the lease is still its own; a holder that
finds it taken (it was stopped longer than EXPIRES_S, then woke up) exits at once, writing nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, NoReturn

from worldmodels.errors import ERROR_EXIT_CODE, DataError, WorldModelsError, one_line, vanished
from worldmodels.files import atomic_write, read_json

log = logging.getLogger("worldmodels")

HEARTBEAT_S = 10.0
EXPIRES_S = 60.0  # six missed heartbeats


def lease_file(run_path: Path, stage: str, task: int | None) -> Path:
    return run_path / "state" / (f"{stage}.lease" if task is None else f"{stage}.task{task}.lease")


@contextlib.contextmanager
def hold(path: Path, name: str, job: str | None = None, identity: str | None = None) -> Iterator[None]:
    """Hold the lease at `path` for the body (`name`: the stage as people say it; `identity`: the
    digest of the stage's identity it runs with); DataError naming the holder when another live
    process holds it."""
    me = {**_here(), "pid": os.getpid(), "job": job, "identity": identity, "token": uuid.uuid4().hex}
    _acquire(path, name, me)
    stop = threading.Event()
    beat = threading.Thread(target=_renew, args=(path, name, me, stop), daemon=True, name=f"lease {name}")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        if _read(path).get("token") == me["token"]:
            path.unlink(missing_ok=True)


def _acquire(path: Path, name: str, me: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a holder that leaves between our two looks: look again
        mine = path.with_name(f".{path.name}.{me['token']}")
        atomic_write(mine, json.dumps({**me, "renewed": time.time()}).encode())
        try:
            os.link(mine, path)  # atomic: of two racers exactly one links
            return
        except FileExistsError:
            pass
        finally:
            mine.unlink(missing_ok=True)
        holder = _read(path)
        why = _gone(holder, me)
        if why is None:
            age = time.time() - holder.get("renewed", 0)
            raise DataError(f"{name} is already running in {path.parent.parent} ({who(holder)}; its lease renewed "
                            f"{age:.0f} s ago): "
                            f"a second copy would write the same files. If that process is gone, its lease expires "
                            f"{max(0.0, EXPIRES_S - age):.0f} s from now")
        log.warning("%s: taking over the lease of host %s pid %s (%s)", name, holder.get("host"), holder.get("pid"), why)
        # rename the stale lease away, then check that what we moved is the one we judged: a racer
        # may have taken it over between our look and our rename; then give it back
        moved = path.with_name(f".{path.name}.stale-{me['token']}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, moved)
            if _read(moved).get("token") != holder.get("token"):
                with contextlib.suppress(FileExistsError):
                    os.link(moved, path)
            moved.unlink(missing_ok=True)
    raise DataError(f"{name}: could not take the lease {path} (other processes keep taking it); is another copy starting?")


def stage_of(path: Path) -> str:
    """The stage whose lease (lease_file) is at `path`."""
    return path.name.split(".")[0]


def live_holders(run_path: Path) -> list[dict[str, Any]]:
    """The holders of the run's leases that may still be running (each with its `lease` file)."""
    me = {**_here(), "job": None}
    return [{**holder, "lease": path} for path in sorted((run_path / "state").glob("*.lease"))
            if (holder := _read(path)) and _gone(holder, me) is None]


def running_otherwise(run_path: Path, stage: str, identity: str, besides: Path | None = None) -> str:
    """Who may be running `stage` (any of its tasks) in the run with another identity than the digest
    `identity`, as `who` says it ("" when nobody), the lease at `besides` (this process's own) aside:
    tasks of one stage starting together with the same new values do not stop each other."""
    for holder in live_holders(run_path):
        if stage_of(holder["lease"]) == stage and holder["lease"] != besides and holder.get("identity") != identity:
            return who(holder)
    return ""


def who(holder: dict[str, Any]) -> str:
    """A lease's holder, for people: "host H, pid P, job J"."""
    return f"host {holder.get('host')}, pid {holder.get('pid')}, job {holder.get('job') or 'none'}"


def _gone(holder: dict[str, Any], me: dict[str, Any]) -> str | None:
    """Why the holder of a lease is certainly gone, or None while it may be alive."""
    if not holder:
        return "an unreadable lease"
    same_pids = holder.get("host") == me["host"] and holder.get("pid_namespace") == me["pid_namespace"]
    if same_pids and not _alive(int(holder.get("pid", -1))):
        return "its process is gone"
    if me["job"] is not None and holder.get("job") == me["job"]:
        return "an earlier attempt of this job"
    if time.time() - holder.get("renewed", 0) > EXPIRES_S:
        return f"not renewed for more than {EXPIRES_S:.0f} s"
    return None


def _here() -> dict[str, Any]:
    """Where this process's pids mean something: its host and PID namespace (None where /proc has none)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]": one inode per namespace
    except OSError:
        namespace = None
    return {"host": socket.gethostname(), "pid_namespace": namespace}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _renew(path: Path, name: str, me: dict[str, Any], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        if not path.parent.parent.is_dir():  # the run directory was removed: never recreate it
            _stop(vanished(path.parent.parent, f"{name} ran"))
        if _read(path).get("token") != me["token"]:
            _stop(DataError(f"{name}: its lease {path} was taken over by another process (this one was stopped for "
                            f"more than {EXPIRES_S:.0f} s?); stopped at once, writing nothing more"))
        try:
            atomic_write(path, json.dumps({**me, "renewed": time.time()}).encode(), root=path.parent)
        except FileNotFoundError:  # removed since the look above: the next look says so
            pass


def _stop(error: WorldModelsError) -> NoReturn:
    """End the process at once from the heartbeat's thread (the main one may be in the middle of a
    write), with the one-line error the command line gives for the same problem."""
    print(one_line(error), file=sys.stderr, flush=True)
    os._exit(ERROR_EXIT_CODE)


def _read(path: Path) -> dict[str, Any]:
    """The lease's record, {} when it is missing or unreadable."""
    return read_json(path) or {}
