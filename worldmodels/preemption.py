"""SIGTERM/SIGUSR2 (and Ctrl-C) become a flag that stage loops check at safe points.

Slurm sends SIGUSR2 (with `--signal`) before a preemption or time limit and SIGTERM when it
cancels; a local user or container runtime sends SIGTERM. Either way the stage finishes the
write in progress, saves, and raises `Interrupted`; the CLI then exits with REQUEUE_EXIT_CODE,
which the job layer reads as "requeue me". Rerunning the same command resumes.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from worldmodels.errors import Interrupted

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: the work is unfinished but safe; run the same command again
# SIGINT (Ctrl-C in a terminal) too: the steps since the last checkpoint are saved, not lost; a
# second Ctrl-C stops at once, for a stage that does not reach a safe point soon enough
SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class StopFlag:
    """Set by a signal; `check()` raises Interrupted once it is set."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        # Signal handlers can only be installed from the main thread; elsewhere (a thread of a
        # host process) the flag simply never fires and the host handles signals itself.
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
