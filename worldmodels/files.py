"""Files that readers never see half-written: every artifact and record is written through here."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes, *, root: Path | None = None, fsync: bool = True) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a torn one.
    The file gets the permissions any new file would (0666 less the umask).

    root: a directory that must exist already (a running stage's run directory); only the ones
    between it and `path` are made, so a write into a removed run directory fails instead of
    recreating it. None makes every missing parent.
    fsync: flush file and directory to disk; chunks of a dataset skip it, as zarr does, and rely
    on their episode's commit marker."""
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        make_dirs(path.parent, root)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600 files whatever the umask: colleagues sharing a group project
        # directory (umask 002) could not read a run
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not fsync:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def make_dirs(path: Path, root: Path) -> None:
    """Make directory `path` and the missing ones between it and `root`, never `root` itself:
    each is made inside its existing parent, so a `root` removed meanwhile raises
    FileNotFoundError where mkdir(parents=True) would quietly make it again."""
    if not path.is_relative_to(root):
        raise ValueError(f"{path} is not inside {root}")
    missing = []
    while path != root and not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:  # made by a concurrent writer
            pass


@functools.cache
def umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it,
    which would race with threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Replace a small existing file's content in its own blocks: where `atomic_write` cannot get a
    new block (a full disk), a record a few hundred bytes long still can be updated."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or torn."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
