"""What a forked child runs: an RQ worker for one supervisor, or the RQ scheduler.

Everything here happens after fork() in the child. The child must never return
into the master's stack, so each entry point ends in os._exit().
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from redis import exceptions as redis_errors

from horizond import signals, sysutil
from horizond.connection.redisconn import RedisSpec
from horizond.core.breakers import Breaker
from horizond.core.config import SupervisorConfig
from horizond.core.limits import QueueLimit
from horizond.observe import logs
from horizond.worker import dequeue, rqworker
from horizond.worker.channel import StateWriter

log = logging.getLogger("horizond.worker")

SCHEDULER_LOCK_RETRY = 5.0


@dataclass(frozen=True)
class ChildSpec:
    """All a child needs, fixed at fork time."""

    kind: str  # "worker" | "scheduler"
    redis: RedisSpec
    master_pid: int
    log_level: int
    supervisor: SupervisorConfig | None = None
    queues: tuple[str, ...] = ()
    paused: bool = False
    limits: tuple[QueueLimit, ...] = ()  # [limits] whose patterns match these queues
    prefix: str = "horizond"  # [redis] prefix: horizond's own keys
    breakers: tuple[Breaker, ...] = ()  # [breakers] covering these queues
    held: tuple[str, ...] = ()  # queues held by open breakers when it was forked


def child_main(spec: ChildSpec, write_fd: int, close_fds: list[int]) -> None:
    """Entry point right after fork(); never returns."""
    code = rqworker.EXIT_FAILED
    try:
        _detach_from_master(spec, close_fds)
        if spec.kind == "scheduler":
            code = _run_scheduler(spec, write_fd)
        else:
            code = _run_worker(spec, StateWriter(write_fd))
    except SystemExit as exc:  # RQ's cold shutdown
        code = exc.code if isinstance(exc.code, int) else rqworker.EXIT_OK
    except BaseException:
        try:
            log.error("worker crashed", extra={"event": "worker_crashed", "error": traceback.format_exc()})
        except BaseException:
            pass
    finally:
        try:
            logging.shutdown()
        finally:
            os._exit(code)


def _detach_from_master(spec: ChildSpec, close_fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    signals.reset_in_child()
    # Own process group: a terminal's Ctrl+C reaches only the master, which then
    # stops workers in order; and the master can kill a worker with all it started.
    os.setpgid(0, 0)
    sysutil.die_with_parent(spec.master_pid)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _run_worker(spec: ChildSpec, reporter: StateWriter) -> int:
    sup = spec.supervisor
    assert sup is not None
    sysutil.set_title(f"horizond: worker {sup.name} [{','.join(spec.queues or sup.queues)}]")
    logs.set_role(f"worker:{sup.name}")
    try:
        worker_class = rqworker.worker_class_for(sup.worker_class)
    except Exception as exc:
        log.error(
            "cannot load worker_class",
            extra={"event": "worker_class_failed", "supervisor": sup.name, "worker_class": sup.worker_class,
                   "error": f"{type(exc).__name__}: {exc}"},
        )
        return rqworker.EXIT_IMPORT
    # The name lets the master find this worker's connections (CLIENT UNBLOCK on pause).
    connection = spec.redis.client(client_name=client_name(spec.master_pid, os.getpid()))
    dequeue.GATE = dequeue.Gate(reporter.fd, reporter, spec.paused, held=spec.held)
    if not _wait_for_redis(connection, dequeue.GATE, sup.name):
        return rqworker.EXIT_OK  # told to stop before Redis came back
    worker = worker_class(list(spec.queues or sup.queues), connection=connection,
                          name=rqworker.worker_name(spec.master_pid, sup.name))
    worker.horizon_attach(reporter, sup, spec.limits, spec.prefix, spec.breakers)
    rq_level = "DEBUG" if spec.log_level <= logging.DEBUG else "WARNING"
    try:
        worker.work(max_jobs=sup.max_jobs or None, logging_level=rq_level)
    finally:
        reporter.flush()  # a job's end report still held for a next job that never started
    recycled = sup.max_jobs and worker.horizon_jobs_done >= sup.max_jobs
    asked_to_stop = worker._stop_requested or dequeue.GATE.stopping
    if worker.horizon_exit_reason or asked_to_stop or recycled:
        return rqworker.EXIT_OK
    try:
        connection.ping()
    except redis_errors.RedisError:  # RQ quits its loop on a Redis timeout: not this worker's fault
        return rqworker.EXIT_REDIS
    return rqworker.EXIT_FAILED  # RQ left its loop on its own: an error it logged


def _wait_for_redis(connection: Redis, gate: dequeue.Gate, supervisor: str | None) -> bool:
    """Started while Redis is away: wait here (backing off) instead of crash-looping.

    The wait is on the master's channel: the master says when its probe sees Redis back,
    so jobs flow at once rather than after up to 10 s of back-off. False: told to stop."""
    delay = 0.5
    while not gate.stopping:
        try:
            connection.ping()
            return True
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            extra = {"event": "redis_unreachable", "retry_in": delay, "error": str(exc)}
            if supervisor:
                extra["supervisor"] = supervisor
            log.warning(f"Redis unreachable; {'worker' if supervisor else 'scheduler'} waiting", extra=extra)
            gate.wait(delay)
            delay = min(delay * 2, 10.0)
    return False


def client_name(master_pid: int, pid: int) -> str:
    """Unique across hosts sharing one Redis (the master unblocks workers by it)."""
    return f"horizond-{sysutil.hostname()}-{master_pid}-{pid}"


def _run_scheduler(spec: ChildSpec, channel_fd: int) -> int:
    """RQ's scheduler moves delayed jobs and retry back-offs back into their queues."""
    from rq.scheduler import RQScheduler

    class Scheduler(RQScheduler):
        @property
        def connection(self):
            # RQ rebuilds a client from the pool's class and kwargs, which a Sentinel pool
            # cannot survive; this process never forks again, so the given client serves.
            return connection

        @property
        def should_reacquire_locks(self) -> bool:
            # RQ retries a lock held by someone else only every 10 minutes; after a
            # crash the old lock expires within 61 s and delayed jobs would wait.
            if self._queue_names == self.acquired_locks:
                return False
            return not self.lock_acquisition_time or \
                (datetime.now() - self.lock_acquisition_time).total_seconds() > SCHEDULER_LOCK_RETRY

    sysutil.set_title("horizond: scheduler")
    logs.set_role("scheduler")
    rq_level = "DEBUG" if spec.log_level <= logging.DEBUG else "WARNING"
    connection = spec.redis.client()
    if not _wait_for_redis(connection, dequeue.Gate(channel_fd, StateWriter(channel_fd), False), None):
        return rqworker.EXIT_OK
    scheduler = Scheduler(list(spec.queues), connection=connection, logging_level=rq_level)
    scheduler.acquire_locks()
    scheduler.work()  # returns after SIGTERM, locks released
    sys.stdout.flush()
    return rqworker.EXIT_OK
