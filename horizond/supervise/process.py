"""WorkerProcess: the master's handle on one forked child, and how it is forked."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field

from horizond import sysutil
from horizond.supervise import reports
from horizond.worker.channel import WorkerLink
from horizond.worker.child import ChildSpec, child_main

log = logging.getLogger("horizond.master")


@dataclass(eq=False)
class WorkerProcess:
    """What the master knows of a child, fed by its state channel."""

    pid: int
    spec: ChildSpec
    link: WorkerLink  # its channel: reports in, the master's words out
    generation: int
    started: float = field(default_factory=time.monotonic)
    name: str = ""
    state: str = "starting"  # starting | idle | busy
    job_id: str | None = None
    job_queue: str | None = None
    job_started_wall: float | None = None
    job_started: float | None = None  # monotonic, when the master heard of it
    job_timeout: float | None = None
    rss: int = 0
    jobs_done: int = 0
    stop_sent: float | None = None  # when SIGTERM went out
    kill_sent: float | None = None
    kill_cause: str | None = None  # why the master killed it, for the job's failure record
    horse_pid: int | None = None  # fork-per-job workers: the child running the current job
    held_seq: int = 0  # the change of the held queues it last acknowledged (supervise/breaking.py)

    def apply(self, message: dict, now: float) -> dict | None:
        """Take in a state report; returns the finished job's facts when it ends one.

        Raises BadReport, changing nothing, for a message no horizond worker sends.
        """
        reports.check(message, self.spec.queues, self.pid)
        state = message.get("s")
        finished = None
        if "name" in message:
            self.name = str(message["name"])
        if "rss" in message:
            self.rss = int(message["rss"])
        if "held" in message:
            self.held_seq = int(message["held"])
        if state == "busy":
            if self.state == "busy" and "ok" in message:  # the last job's end, sent with this start
                finished = self._job_ended(message, now)
            self.state = "busy"
            self.job_id = message.get("job")
            self.job_queue = message.get("q")
            self.job_started_wall = message.get("t")
            self.job_started = now
            self.job_timeout = message.get("timeout")
        elif state == "paused":
            self.state = "paused"
        elif state == "idle":
            if self.state == "busy":
                finished = self._job_ended(message, now)
            self.state = "idle"
            self.job_id = self.job_queue = self.job_started_wall = self.job_started = self.job_timeout = None
            self.horse_pid = None
        elif state == "horse":
            self.horse_pid = message["pid"] if reports.parent_of(message["pid"]) == self.pid else None
        return finished

    def _job_ended(self, message: dict, now: float) -> dict | None:
        """The facts of the job in hand, which the worker reports ended."""
        self.jobs_done += 1
        if not (self.job_queue and self.job_started is not None):
            return None
        return {"queue": self.job_queue, "func": message.get("func"), "ok": message.get("ok", True),
                "wait": message.get("wait"), "runtime": message.get("runtime", now - self.job_started)}

    def reject(self, reason: str, now: float) -> None:
        """It sent what no horizond worker sends (job code wrote to its channel): kill it.

        Its job, if any, is settled with this cause; its slot starts a new worker.
        """
        log.error("worker sent a bad state report; killing it", extra={
            "event": "worker_misbehaving", "pid": self.pid, "job_id": self.job_id, "error": reason,
            "supervisor": self.spec.supervisor.name if self.spec.supervisor else self.spec.kind})
        self.kill_cause = f"its worker sent a bad state report ({reason})"
        self.kill(now)

    def terminate(self, now: float) -> None:
        """Warm stop: the job in hand finishes; an idle worker leaves at its next safe point.

        The channel word reaches a paused worker waiting on it; SIGTERM reaches one
        running a job; an idle one blocked in Redis is unblocked by the master.
        """
        if self.stop_sent is None:
            self.stop_sent = now
            if self.spec.kind == "worker":
                self.link.send(cmd="stop")
            _signal(self.pid, signal.SIGTERM)

    @property
    def blocked_waiting(self) -> bool:
        """Idle in a blocking dequeue although it should leave: needs CLIENT UNBLOCK."""
        return self.stop_sent is not None and self.kill_sent is None and self.state in ("idle", "starting")

    def holds_stale(self, seq: int) -> bool:
        """Idle, maybe blocked on a queue held since: needs CLIENT UNBLOCK until it says it knows."""
        return self.held_seq < seq and self.stop_sent is None and self.state in ("idle", "starting")

    def kill(self, now: float) -> None:
        if self.kill_sent is None:
            self.kill_sent = now
        sysutil.kill_group(self.pid, signal.SIGKILL)
        if self.horse_pid:
            sysutil.kill_group(self.horse_pid, signal.SIGKILL)

    def stop_deadline(self, grace: float, shutting_down: bool = True) -> float | None:
        """When a stopping worker has had its fair chance: its job's timeout plus grace.

        A job without a timeout (-1) is never cut short by a scale-down, restart or
        reload; only a shutdown bounds it (by the grace alone).
        """
        if self.stop_sent is None:
            return None
        if self.state == "busy" and self.job_started is not None:
            if not (self.job_timeout and self.job_timeout > 0):
                return self.stop_sent + grace if shutting_down else None
            return max(self.stop_sent, self.job_started + self.job_timeout) + grace
        return self.stop_sent + grace


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def spawn(spec: ChildSpec, generation: int, close_fds: list[int]) -> WorkerProcess:
    """Fork a child running `spec`; the parent gets a handle with its state channel.

    Raises OSError (EMFILE, EAGAIN ...) with nothing left open: the caller treats
    it as a failed start of that slot and backs off.
    """
    master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_fd, write_fd = master_end.detach(), worker_end.detach()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # child
        os.close(read_fd)
        child_main(spec, write_fd, close_fds)  # never returns
    os.close(write_fd)
    return WorkerProcess(pid=pid, spec=spec, link=WorkerLink(read_fd), generation=generation)
