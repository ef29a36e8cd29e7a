"""Circuit breakers in the worker: admit a job, count its failure, close on a probe's success.

Only jobs of queues a breaker covers pay for it (one script call before the start; one after a
counted failure). A job held back by an open breaker goes back to the head of its queue in the
same script (never run, no try spent), and this worker leaves that queue alone until the master
says otherwise (dequeue.Gate.hold_here); the master holds the queue on every node from its next
sample (supervise/breaking.py).
"""

from __future__ import annotations

import logging

from rq.job import Job
from rq.queue import Queue

from horizond.core import breakers
from horizond.observe import breakers as state
from horizond.worker import dequeue

log = logging.getLogger("horizond.worker")


def admit(worker, job: Job, queue: Queue) -> bool:
    covering = breakers.covering(worker.horizon_breakers, queue.name)
    if not covering:
        return True
    ok, probe_keys = state.admit(worker.connection, worker.horizon_prefix, covering, job.id, queue.key)
    if ok:
        job.horizon_probe = tuple(b for b in covering if state.keys(worker.horizon_prefix, b)[0] in probe_keys)
        if job.horizon_probe:
            log.info("half-open breaker: this job is its probe", extra={
                "event": "breaker_probe", "job_id": job.id, "breaker": ", ".join(b.name for b in job.horizon_probe)})
        return True
    _hold(worker, queue.name)
    return False


def after_failure(worker, job: Job, exc_type: type | None) -> None:
    names = _names(exc_type)
    for breaker in breakers.covering(worker.horizon_breakers, job.origin):
        probe = breaker in getattr(job, "horizon_probe", ())
        if not (probe or breaker.counts(names)):
            continue
        now, change = state.failed(worker.connection, worker.horizon_prefix, breaker, job.id)
        if change:
            log.warning("circuit breaker tripped by this job's failure", extra={
                "event": "breaker_tripped", "breaker": breaker.name, "how": change, "job_id": job.id,
                "queues": list(breaker.queues)})
            for queue in worker.queue_names():
                if breaker.covers(queue):
                    _hold(worker, queue)


def after_success(worker, job: Job) -> None:
    for breaker in getattr(job, "horizon_probe", ()):
        if state.succeeded(worker.connection, worker.horizon_prefix, breaker, job.id):
            log.info("circuit breaker closed: its probe succeeded", extra={
                "event": "breaker_closed", "breaker": breaker.name, "job_id": job.id})


def _hold(worker, queue: str) -> None:
    if dequeue.GATE is not None:
        dequeue.GATE.hold_here(queue)


def _names(exc_type: type | None) -> tuple[str, ...]:
    """The exception's classes, short and dotted, bases included."""
    if exc_type is None:
        return ()
    return tuple(n for cls in exc_type.__mro__ for n in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"))
