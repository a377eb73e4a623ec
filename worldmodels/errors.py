"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path


class WorldModelsError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


class ConfigError(WorldModelsError):
    """An unknown config key, a value of the wrong type or out of range, or a conflicting run."""


class DataError(WorldModelsError):
    """A missing, corrupt or mismatched dataset or artifact."""


class TrainingError(WorldModelsError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


class StorageError(WorldModelsError):
    """The run directory's file system failed the stage: full, read-only, or gone."""


def explain_storage(exc: OSError, run_dir: Path) -> StorageError | None:
    """A one-line StorageError for an OSError that the file system (not a bug) caused, else None."""
    where = exc.filename or run_dir
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"no space left for {where} (disk full or quota reached): free some space, then rerun the "
                            "same command to resume; what was being written was not kept")
    if exc.errno == errno.EROFS:
        return StorageError(f"{where} is on a read-only file system: give the stage a writable run directory "
                            "(or remount it read-write) and rerun")
    if exc.errno in (errno.ENOENT, errno.ESTALE) and not Path(run_dir).is_dir():
        return vanished(run_dir, "the stage ran")
    return None


def unreadable(what: str, exc: OSError) -> StorageError:
    """The error for a read that failed (EIO, ESTALE): it says nothing of the file, which may read back
    whole once the file system answers, so it is not damage, and nothing is set aside or dropped for it."""
    return StorageError(f"{what} cannot be read now ({exc.strerror or exc}); it is kept as it is: rerun once the file "
                        "system answers")


def vanished(path: Path, during: str) -> StorageError:
    """The error for a directory removed while a stage wrote into it (which stops rather than recreate it)."""
    return StorageError(f"{path} vanished while {during} (deleted, or its file system unmounted); nothing more "
                        "was written")


ERROR_EXIT_CODE = 2  # the exit code that goes with the one line


def one_line(exc: BaseException) -> str:
    """How a user sees an error: one line on stderr (the CLI's, and a lease's heartbeat that ends the
    process from its own thread)."""
    return f"error: {exc}"


class Interrupted(Exception):
    """A stage stopped on SIGTERM/SIGUSR2 after saving its progress; rerunning it resumes."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}; progress saved, rerun to resume")
        self.signum = signum
