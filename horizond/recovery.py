"""Settle what a dead worker left in Redis: its job and its worker record.

The master knows which job a worker held (state channel), so when the worker
dies mid-job the job is retried or failed at once, under the same policy the
worker would have applied, instead of waiting for RQ's registry expiry.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from . import policy
from .config import SupervisorConfig

log = logging.getLogger("horizond.recovery")

WORKER_KEY_PREFIX = "rq:worker:"


def settle_lost_job(connection: Redis, job_id: str, worker_name: str, sup: SupervisorConfig, cause: str) -> str:
    """Retry or fail a job whose worker died running it. Returns what was done.

    Only a job still marked started by that very worker is touched: if the worker
    finished it before dying, the job's record says so and is left alone.
    """
    try:
        job = Job.fetch(job_id, connection=connection)
    except Exception:
        return "gone"
    if job.get_status(refresh=False) != JobStatus.STARTED or (job.worker_name and job.worker_name != worker_name):
        return "not-held"
    queue = Queue(job.origin, connection=connection)
    rule = policy.retry_rule(job.retries_left, job.retry_intervals, sup.tries, sup.backoff)
    reason = f"horizond: worker {worker_name} died while running this job ({cause})"
    with connection.pipeline() as pipe:
        queue.started_job_registry.remove_executions(job, pipeline=pipe)
        if rule is not None and rule.retries_left > 0:
            job.retries_left = rule.retries_left
            job.retry_intervals = list(rule.intervals)
            job.retry(queue, pipe)
            outcome = "retried"
        else:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(reason, pipe, worker_name=worker_name)
            outcome = "failed"
        pipe.execute()
    if outcome == "failed":
        queue.enqueue_dependents(job)
    log.warning("job of a dead worker settled", extra={"event": "job_recovered", "job_id": job_id,
                                                       "queue": job.origin, "outcome": outcome, "cause": cause})
    return outcome


def forget_worker(connection: Redis, worker_name: str, queues: tuple[str, ...]) -> None:
    """Remove a dead worker from RQ's registries so `rq info` shows only live ones."""
    key = WORKER_KEY_PREFIX + worker_name
    with connection.pipeline() as pipe:
        pipe.srem(REDIS_WORKER_KEYS, key)
        for name in queues:
            pipe.srem(WORKERS_BY_QUEUE_KEY % name, key)
        pipe.delete(key)
        pipe.execute()
