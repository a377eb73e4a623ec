"""Heartbeats between MPI ranks, so that a rank that stops cannot hold a job until its time limit.

A rank stopped on a live node (SIGSTOP, a hang in a file system or a driver) leaves every other
rank waiting in the next collective: Slurm sees nothing wrong, and the job would sit there until
its time limit. So while a stage runs, a thread on each rank sends a small message every
`timeout/4` seconds on a communicator of its own: every rank to rank 0, rank 0 to every rank.
Rank 0 watches every rank, the others watch rank 0. A rank silent for `timeout` seconds stops
the job: the watcher logs which rank on which node went silent, runs the requeue action the job
layer installed (on Slurm: `scontrol requeue`, and the job resumes from its last checkpoint on
a new attempt) and aborts every rank with REQUEUE_EXIT_CODE. A node that drops off the network
is found both here and by Slurm (its node failure detection requeues the job too).

Needs MPI_THREAD_MULTIPLE (mpi4py asks for it; Debian's OpenMPI gives it): the heartbeat thread
sends while the main thread waits in a collective. Messages are one byte: a 64-rank job at the
default one-minute timeout sends about eight a second.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger("worldmodels")

BEAT, BYE = 1, 2  # message tags
_requeue: Callable[[], None] | None = None


def on_silence(action: Callable[[], None]) -> None:
    """Run `action` (the job layer's requeue) before the ranks are aborted over a silent rank."""
    global _requeue
    _requeue = action


class Heartbeat:
    """Context manager: heartbeats on a duplicate of `comm` while the block runs."""

    def __init__(self, comm, timeout_s: float, what: str, hosts: list[str], abort_code: int):
        self.comm, self.timeout_s, self.what, self.hosts, self.abort_code = comm, timeout_s, what, hosts, abort_code
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.peers = list(range(1, self.size)) if self.rank == 0 else [0]
        self._stop = threading.Event()
        self._sends: list = []
        self._byes: set[int] = set()  # the peers that have stopped beating, as they said
        self._one = np.zeros(1, dtype=np.uint8)

    def __enter__(self) -> "Heartbeat":
        self.channel = self.comm.Dup()  # collective: every rank enters together
        self.last = {peer: time.monotonic() for peer in self.peers}
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def _send(self, tag: int) -> None:
        for peer in self.peers:
            self._sends.append(self.channel.Isend(self._one, dest=peer, tag=tag))
        self._sends = [r for r in self._sends if not r.Test()]

    def _receive(self) -> None:
        """Take every message waiting."""
        from mpi4py import MPI

        status, buf = MPI.Status(), np.zeros(1, dtype=np.uint8)
        while self.channel.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            self.channel.Recv(buf, source=status.Get_source(), tag=status.Get_tag())
            self.last[status.Get_source()] = time.monotonic()
            if status.Get_tag() == BYE:
                self._byes.add(status.Get_source())

    def _run(self) -> None:
        interval = self.timeout_s / 4
        next_beat = awake = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if awake and now - awake > interval:
                # this thread did not run for a while: it is this rank that was stopped (and then
                # continued), not its peers that were silent; give them a fresh window
                self.last = dict.fromkeys(self.peers, now)
            awake = now
            if now >= next_beat:
                self._send(BEAT)
                next_beat = now + interval
            self._receive()
            silent = [p for p in self.peers if p not in self._byes and time.monotonic() - self.last[p] > self.timeout_s]
            if silent:
                self._lost(silent[0])
            self._stop.wait(min(0.2, interval))

    def _lost(self, peer: int) -> None:
        log.error("%s: rank %d on %s sent no heartbeat for %.0f s (controller.heartbeat_s); stopping the job so "
                  "that it resumes from its last checkpoint", self.what, peer, self.hosts[peer], self.timeout_s)
        if _requeue is not None:
            try:
                _requeue()
            except Exception as exc:  # the abort below must happen whatever the requeue did
                log.error("%s: requeue failed: %s", self.what, exc)
        self.comm.Abort(self.abort_code)

    def __exit__(self, exc_type, *exc: object) -> None:
        """Stop beating and take every message still on the way, so nothing is left unmatched when
        MPI finalises: each side says goodbye last, and MPI keeps a pair's messages in order. After
        an error the ranks may not all be here: the caller aborts them, so nothing is waited for."""
        self._stop.set()
        self._thread.join()
        if exc_type is not None:
            return
        self._send(BYE)
        deadline = time.monotonic() + self.timeout_s
        while not self._byes.issuperset(self.peers) and time.monotonic() < deadline:
            self._receive()
            time.sleep(0.01)
        for request in self._sends:
            request.Wait()
        self.channel.Free()
