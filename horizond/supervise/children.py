"""The master's forked children: forking with the right fds kept out, their state channels
read in batches, their exits reaped by pid.

Kept apart from the master because it is the part that talks to the kernel about processes
(fork, waitid, the channels' fds) and must get a few subtle things right: a child must not
inherit the master's sockets; a fast job stream must cost the loop a wakeup per batch of
reports, not two per job; and only our own children are waited for (never P_ALL, which would
take a [notify] helper's exit status from its Popen). What a report or an exit *means* stays
with the master, which passes three callbacks.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Callable

from horizond.supervise.process import WorkerProcess, spawn
from horizond.supervise.reports import BadReport
from horizond.sysutil import kill_group
from horizond.worker.child import ChildSpec

log = logging.getLogger("horizond.master")

REPORTS_EVERY = 0.02  # workers' reports are read in batches at most this often (50 wakeups/s at any job rate)

Finished = Callable[[WorkerProcess, str | None, dict], None]  # (proc, job id, what apply() returned)
StateChanged = Callable[[WorkerProcess, str], None]  # (proc, its state before)
Exited = Callable[[WorkerProcess, int], None]  # (proc, wait status), after its last words were read


class Children:
    def __init__(self, loop: selectors.BaseSelector, on_finished: Finished, on_state: StateChanged,
                 on_exit: Exited):
        self.procs: dict[int, WorkerProcess] = {}
        self.exited = False  # a SIGCHLD came: reap() looks at each child
        self._loop = loop
        self._channels = selectors.DefaultSelector()  # the workers' state channels, read as one batch
        self._muted_until: float | None = None
        self._on_finished, self._on_state, self._on_exit = on_finished, on_state, on_exit

    def open(self) -> None:
        self._loop.register(self._channels.fileno(), selectors.EVENT_READ, self._read_batch)

    def close(self) -> None:
        self._channels.close()

    def own_fds(self) -> list[int]:
        """Fds a new child must not keep: the channels of its siblings and the batch selector."""
        return [key.fd for key in self._channels.get_map().values()] + [self._channels.fileno()]

    def fork(self, spec: ChildSpec, generation: int, keep_out: list[int]) -> WorkerProcess:
        proc = spawn(spec, generation, keep_out + self.own_fds())
        self.procs[proc.pid] = proc
        self._channels.register(proc.link.fd, selectors.EVENT_READ, proc)
        return proc

    def muted_for(self, now: float) -> float | None:
        """Seconds until the channels are read again (None: they are not resting)."""
        return None if self._muted_until is None else max(0.0, self._muted_until - now)

    def unmute(self) -> float:
        """Let the loop wake for reports again once their rest is over; returns the time now."""
        now = time.monotonic()
        if self._muted_until is not None and now >= self._muted_until:
            self._muted_until = None
            self._loop.register(self._channels.fileno(), selectors.EVENT_READ, self._read_batch)
        return now

    def _read_batch(self) -> None:
        """Every worker with something to say, in one batch; then the channels rest REPORTS_EVERY."""
        for key, _ in self._channels.select(0):
            if self._channels.get_map().get(key.fd) is key:  # not closed earlier in this batch
                self.read(key.data)
        self._loop.unregister(self._channels.fileno())
        self._muted_until = time.monotonic() + REPORTS_EVERY

    def read(self, proc: WorkerProcess) -> None:
        """Take in what one worker said; a report it must not send kills it, never the master."""
        now = time.monotonic()
        try:
            was = proc.state
            for message in proc.link.read():
                job_id = proc.job_id
                finished = proc.apply(message, now)
                if finished:
                    self._on_finished(proc, job_id, finished)
            if proc.state != was:
                self._on_state(proc, was)
            if proc.link.fault:
                raise BadReport(proc.link.fault)
        except BadReport as exc:  # job code wrote to the channel: the worker is killed, the master lives on
            proc.reject(str(exc), now)
            self._close_channel(proc)
        if proc.link.closed:
            self._close_channel(proc)

    def _close_channel(self, proc: WorkerProcess) -> None:
        if proc.link.fd >= 0:
            self._channels.unregister(proc.link.fd)
            proc.link.close()

    def reap(self) -> None:
        """Wait for the children this master forked, by pid, after a SIGCHLD."""
        if not self.exited:
            return
        self.exited = False
        for pid, proc in list(self.procs.items()):
            try:  # peek first: while the child is a zombie its pid cannot be reused
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped by someone else: its status is lost, not its job
                log.error("a worker's exit status was taken by another wait", extra={
                    "event": "child_lost", "child_pid": pid})
                status = int(signal.SIGKILL)
            else:
                if info is None:
                    continue
                self._last_words(proc)  # while a zombie: a bad report's kill cannot reach a reused pid
                kill_group(pid, signal.SIGKILL)  # anything its jobs left behind in its group (and its horse's)
                if proc.horse_pid:
                    kill_group(proc.horse_pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
            del self.procs[pid]
            self._last_words(proc)
            self._on_exit(proc, status)

    def _last_words(self, proc: WorkerProcess) -> None:
        """A job it finished just before exiting is counted; then its channel is closed."""
        if proc.link.fd >= 0:
            self.read(proc)
            self._close_channel(proc)
