"""The RQ worker classes horizond runs: any RQ worker class plus a small mixin.

The mixin keeps the worker plain RQ to every other tool (registries, `rq info`,
job status) and adds only what the master needs: state reports over the channel,
the supervisor's job policy, and a graceful exit when over its memory limit.
"""

from __future__ import annotations

import importlib
import logging
import os
import select
import time

import psutil
from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from . import policy, sysutil
from .channel import StateWriter
from .config import SupervisorConfig

log = logging.getLogger("horizond.worker")

DEFAULT_WORKER_CLASS = "rq.worker.SimpleWorker"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_IMPORT = 3


GATE_WAIT = 30.0  # a paused worker wakes this often so RQ keeps its heartbeat


class Gate:
    """This worker's pause state, set by the master over the channel.

    Read only when the worker is about to dequeue, so a pause never interrupts a
    job; the master frees a worker blocked in BLMOVE/BLPOP with CLIENT UNBLOCK,
    which Redis resolves atomically (the job is either handed over or not).
    """

    def __init__(self, fd: int, reporter: StateWriter, paused: bool):
        self.fd = fd
        self.reporter = reporter
        self.paused = paused
        self._buffer = b""

    def _receive(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        data = os.read(self.fd, 4096)
        if not data:  # the master is gone; PDEATHSIG is on its way
            self.paused = True
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line == b'{"cmd":"pause"}':
                self.paused = True
            elif line == b'{"cmd":"continue"}':
                self.paused = False

    def hold(self, max_wait: float) -> bool:
        """Wait while paused (up to max_wait); True when the worker may dequeue."""
        self._receive(0)
        if not self.paused:
            return True
        self.reporter.send(s="paused")
        deadline = time.monotonic() + max_wait
        while self.paused and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        if self.paused:
            return False
        self.reporter.send(s="idle")
        return True


GATE: Gate | None = None  # one worker per process


class HorizonQueue(Queue):
    @classmethod
    def dequeue_any(cls, queues, timeout, connection, *args, **kwargs):
        if GATE is not None and not GATE.hold(min(timeout or GATE_WAIT, GATE_WAIT)):
            raise DequeueTimeout(timeout, [q.key for q in queues])
        return super().dequeue_any(queues, timeout, connection, *args, **kwargs)


class HorizonWorkerMixin:
    """Mixed in front of an RQ worker class; see worker_class_for()."""

    queue_class = HorizonQueue
    horizon_reporter: StateWriter
    horizon_supervisor: SupervisorConfig
    horizon_exit_reason: str | None = None
    horizon_jobs_done = 0
    _horizon_process: psutil.Process | None = None

    def horizon_attach(self, reporter: StateWriter, supervisor: SupervisorConfig) -> None:
        self.horizon_pid = os.getpid()
        self.horizon_reporter = reporter
        self.horizon_supervisor = supervisor
        self._horizon_process = psutil.Process()

    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)  # registers the worker in Redis
        self.horizon_reporter.send(s="idle", name=self.name, rss=self._horizon_rss())

    def execute_job(self, job: Job, queue: Queue):
        self._horizon_apply_policy(job)
        self.horizon_reporter.send(s="busy", job=job.id, q=queue.name, t=time.time(), timeout=job.timeout)
        try:
            return super().execute_job(job, queue)
        finally:
            self.horizon_jobs_done += 1
            rss = self._horizon_rss()
            self.horizon_reporter.send(s="idle", rss=rss)
            self._horizon_check_memory(rss)

    def main_work_horse(self, job: Job, queue: Queue):
        # Fork-per-job workers put the horse in its own process group, out of reach
        # of the master's group kill: make it die with its worker instead.
        sysutil.die_with_parent(self.horizon_pid)
        return super().main_work_horse(job, queue)

    def _horizon_apply_policy(self, job: Job) -> None:
        sup = self.horizon_supervisor
        job.timeout = policy.job_timeout(job.timeout, sup.timeout)
        if job.retries_left is None:
            rule = policy.retry_rule(None, None, sup.tries, sup.backoff)
            if rule is not None:
                job.retries_left = rule.retries_left
                job.retry_intervals = list(rule.intervals)

    def _horizon_rss(self) -> int:
        return self._horizon_process.memory_info().rss if self._horizon_process else 0

    def _horizon_check_memory(self, rss: int) -> None:
        limit = self.horizon_supervisor.memory * 1024 * 1024
        if rss > limit and not self._stop_requested:
            log.warning(
                "worker over its memory limit after a job; exiting to be replaced",
                extra={"event": "worker_memory_exceeded", "rss_mb": rss // (1024 * 1024),
                       "memory_mb": self.horizon_supervisor.memory},
            )
            self.horizon_exit_reason = "memory"
            self._stop_requested = True


def import_dotted(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def worker_class_for(dotted: str | None) -> type:
    """The user's RQ worker class (default SimpleWorker) with the mixin in front."""
    base = import_dotted(dotted or DEFAULT_WORKER_CLASS)
    if not (isinstance(base, type) and hasattr(base, "execute_job")):
        raise TypeError(f"worker_class {dotted!r} is not an RQ worker class")
    if base is SimpleWorker:
        return HorizonSimpleWorker
    return type(f"Horizon{base.__name__}", (HorizonWorkerMixin, base), {})


class HorizonSimpleWorker(HorizonWorkerMixin, SimpleWorker):
    pass


def worker_name(supervisor: str) -> str:
    return f"horizond.{sysutil.hostname()}.{supervisor}.{os.getpid()}"
