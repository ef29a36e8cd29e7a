"""The RQ worker classes horizond runs: any RQ worker class plus a small mixin.

The mixin keeps the worker plain RQ to every other tool (registries, `rq info`,
job status) and adds only what the master needs: state reports over the channel,
the supervisor's job policy, and a graceful exit when over its memory limit.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from typing import NamedTuple

import psutil
from rq.job import Job
from rq.queue import Queue
from rq.utils import now as utcnow
from rq.worker import SimpleWorker

from horizond import sysutil
from horizond.core import limits, policy
from horizond.core.breakers import Breaker
from horizond.core.config import SupervisorConfig
from horizond.core.limits import QueueLimit
from horizond.worker import breaking, dequeue, jobcontrol, limiting
from horizond.worker.channel import StateWriter
from horizond.worker.dequeue import HorizonQueue
from horizond.worker.leanworker import LeanWorker

log = logging.getLogger("horizond.worker")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_IMPORT = 3
EXIT_REDIS = 4  # left because Redis went away: restarted at once, not a crash loop


class HorizonWorkerMixin:
    """Mixed in front of an RQ worker class; see worker_class_for()."""

    queue_class = HorizonQueue
    horizon_reporter: StateWriter
    horizon_supervisor: SupervisorConfig
    horizon_exit_reason: str | None = None
    horizon_jobs_done = 0
    horizon_limits: tuple[QueueLimit, ...] = ()
    horizon_breakers: tuple[Breaker, ...] = ()
    horizon_prefix = "horizond"
    _horizon_process: psutil.Process | None = None

    def horizon_attach(self, reporter: StateWriter, supervisor: SupervisorConfig,
                       queue_limits: tuple[QueueLimit, ...] = (), prefix: str = "horizond",
                       queue_breakers: tuple[Breaker, ...] = ()) -> None:
        self.horizon_limits = queue_limits
        self.horizon_breakers = queue_breakers
        self.horizon_prefix = prefix
        self.horizon_pid = os.getpid()
        self.horizon_reporter = reporter
        self.horizon_supervisor = supervisor
        self._horizon_process = psutil.Process()

    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)  # registers the worker in Redis
        self.horizon_reporter.send(s="idle", name=self.name, rss=self._horizon_rss())

    def execute_job(self, job: Job, queue: Queue):
        self._horizon_apply_policy(job)
        if (self.horizon_limits or self.horizon_breakers) and not self._horizon_admitted(job, queue):
            return None
        self.horizon_reporter.send(s="busy", job=job.id, q=queue.name, t=time.time(), timeout=job.timeout)
        # No `finally`: if RQ's bookkeeping fails (Redis gone mid-job) the worker
        # leaves still "busy", so the master settles the job instead of losing it.
        result = super().execute_job(job, queue)
        if getattr(self, "lean_put_back", False):  # `rq suspend`: the job never started, it is back in its queue
            self.horizon_reporter.send(s="idle", rss=self._horizon_rss())
            return result
        self.horizon_jobs_done += 1
        if getattr(job, "horizon_probe", ()) and job.get_status(refresh=False) == "finished":
            breaking.after_success(self, job)  # a half-open breaker's probe succeeded: close it
        rss = self._horizon_rss()
        ended = {"s": "idle", "rss": rss, **_outcome(job, forked=bool(getattr(self, "_horse_pid", 0)))}
        if getattr(self, "_lean_next", None) is not None:  # the next job is taken: its 'busy' carries this
            self.horizon_reporter.defer(**ended)
        else:
            self.horizon_reporter.send(**ended)
        self._horizon_check_memory(rss)
        return result

    def request_stop(self, signum, frame):
        """SIGTERM/SIGINT: leave after the job in hand, at the next safe point.

        RQ raises StopRequested from the handler, i.e. possibly inside BLMOVE's
        reply or between dequeue and start: a job could vanish. Here the flag is
        only recorded; the dequeue gate acts on it (the master also unblocks).
        """
        self._shutdown_requested_date = utcnow()
        self._stop_requested = True
        if dequeue.GATE is not None:
            dequeue.GATE.stopping = True

    def request_force_stop(self, signum, frame):
        self.request_stop(signum, frame)  # the master escalates with SIGKILL, never a second SIGTERM

    def fork_work_horse(self, job: Job, queue: Queue):
        super().fork_work_horse(job, queue)
        # The horse has its own process group: tell the master, which kills it too.
        self.horizon_reporter.send(s="horse", pid=self._horse_pid)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # RQ clears the intermediate list only for single-queue workers; ours move
        # from every queue (dequeue.py), so always clear it when the job starts.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def main_work_horse(self, job: Job, queue: Queue):
        # Fork-per-job workers put the horse in its own process group, out of reach
        # of the master's group kill: make it die with its worker instead.
        sysutil.die_with_parent(self.horizon_pid)
        return super().main_work_horse(job, queue)

    def _horizon_apply_policy(self, job: Job) -> None:
        """The job's timeout and tries: its own (enqueue time, then its function's
        @job_options), else its supervisor's (core/policy.py, core/jobopts.py)."""
        sup = self.horizon_supervisor
        options = jobcontrol.declared(job)
        timeout = policy.job_timeout(job.timeout, options.timeout or sup.timeout)
        if timeout != job.timeout:
            job.timeout = timeout
            job.horizon_policy_applied = True
        if job.retries_left is None:
            tries = options.tries if options.tries is not None else sup.tries
            backoff = options.backoff if options.backoff is not None else sup.backoff
            rule = policy.retry_rule(None, None, tries, backoff)
            if rule is not None:
                job.retries_left = rule.retries_left
                job.retry_intervals = list(rule.intervals)
                job.horizon_policy_applied = True
        jobcontrol.watch(job, options)

    def handle_exception(self, job: Job, *exc_info):
        jobcontrol.after_exception(job, exc_info[0] if exc_info else None)  # before RQ reads should_retry
        if self.horizon_breakers:
            breaking.after_failure(self, job, exc_info[0] if exc_info else None)
        return super().handle_exception(job, *exc_info)

    def _horizon_admitted(self, job: Job, queue: Queue) -> bool:
        """[breakers], then [limits]: start the job, or leave it back in its queue (an open breaker:
        worker/breaking.py) or waiting for its limit (worker/limiting.py); then the worker shows
        idle, as after a job, and dequeues again."""
        limit = limits.limit_for(self.horizon_limits, queue.name)
        if breaking.admit(self, job, queue) and (limit is None or limiting.admit(
                self.connection, job, queue, limit, self.horizon_prefix) == limiting.ADMITTED):
            return True
        self.horizon_reporter.flush()  # the last job's end, held for this start
        write_idle = getattr(self, "_lean_write_idle", None)
        if write_idle is not None:
            write_idle()  # the lean worker's idle write, left out of the last job's end
        return False

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


def _outcome(job: Job, forked: bool) -> dict:
    """What the master's metrics need of a finished job, from what the worker already knows.

    A fork-per-job worker's copy of the job never saw the horse's result: one read.
    """
    status = job.get_status(refresh=True) if forked else job.get_status(refresh=False)
    report = {"func": job.func_name, "ok": status == "finished"}
    if job.started_at and job.enqueued_at:
        report["wait"] = max(0.0, (job.started_at - job.enqueued_at).total_seconds())
    if job.started_at and job.ended_at and not forked:
        report["runtime"] = max(0.0, (job.ended_at - job.started_at).total_seconds())
    return report


def import_dotted(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def worker_class_for(dotted: str | None) -> type:
    """The lean worker when no worker_class is set; else the user's RQ worker class
    (e.g. rq.worker.SimpleWorker for RQ's stock bookkeeping) with the mixin in front."""
    if dotted is None:
        return HorizonLeanWorker
    base = import_dotted(dotted)
    if not (isinstance(base, type) and hasattr(base, "execute_job")):
        raise TypeError(f"worker_class {dotted!r} is not an RQ worker class")
    if base is SimpleWorker:
        return HorizonSimpleWorker
    return type(f"Horizon{base.__name__}", (HorizonWorkerMixin, base), {})


class HorizonSimpleWorker(HorizonWorkerMixin, SimpleWorker):
    pass


class HorizonLeanWorker(HorizonWorkerMixin, LeanWorker):
    pass


class WorkerOwner(NamedTuple):
    host: str
    master_pid: int
    master_start: str | None  # sysutil.start_token of the master; None in older names
    pid: int
    supervisor: str


def worker_name(master_pid: int, supervisor: str) -> str:
    """horizond:HOST:MASTER_PID.MASTER_START:PID:SUPERVISOR - enough for a later master to tell
    whether the worker that holds a job can still be alive (recovery.py): the master's pid and
    start (sysutil.start_token) name that master and no later process with its pid."""
    start = sysutil.start_token(master_pid)
    master = f"{master_pid}.{start}" if start else str(master_pid)
    return f"horizond:{sysutil.hostname()}:{master}:{os.getpid()}:{supervisor}"


def parse_worker_name(name: str) -> WorkerOwner | None:
    """What a horizond worker name says of its worker and master, else None."""
    parts = name.split(":", 4)
    if len(parts) != 5 or parts[0] != "horizond":
        return None
    master_pid, _, start = parts[2].partition(".")
    if not (master_pid.isdigit() and parts[3].isdigit()):
        return None
    return WorkerOwner(parts[1], int(master_pid), start or None, int(parts[3]), parts[4])
