"""Failed jobs across the served queues: list, show, retry, forget, flush, prune; and clearing a queue.

Thin wrappers over RQ's FailedJobRegistry, so what they change is exactly what
`rq` and rq-dashboard see. Every command that names job ids checks all of them
first: an unknown id is an error that changes nothing.
"""

from __future__ import annotations

import time

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry


class FailedError(Exception):
    pass


def _registries(redis: Redis, queues: tuple[str, ...], only: str | None) -> list[FailedJobRegistry]:
    if only is not None and only not in queues:
        raise FailedError(f"unknown queue {only!r} (served: {', '.join(queues) or 'none'})")
    return [FailedJobRegistry(q, connection=redis) for q in ((only,) if only else queues)]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _summary(job: Job, queue: str) -> dict:
    ended = job.ended_at.timestamp() if job.ended_at else None
    return {"id": job.id, "queue": queue, "func": job.func_name, "failed_at": ended,
            "exception": _last_line(job.exc_info)}


def listing(redis: Redis, queues: tuple[str, ...], only: str | None, limit: int) -> list[dict]:
    """Newest first, at most `limit`."""
    out = []
    for registry in _registries(redis, queues, only):
        ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)  # newest `limit` of each queue
        for job in Job.fetch_many(ids, connection=redis) if ids else []:
            if job is not None:
                out.append(_summary(job, registry.name))
    out.sort(key=lambda j: j["failed_at"] or 0, reverse=True)
    return out[:limit]


def count(redis: Redis, queues: tuple[str, ...]) -> int:
    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zcard(FailedJobRegistry(q, connection=redis).key)
        return sum(pipe.execute())


def _locate(redis: Redis, queues: tuple[str, ...], ids: list[str]) -> dict[str, FailedJobRegistry]:
    if not ids:
        raise FailedError("no job id given")
    where, unknown = {}, []
    registries = _registries(redis, queues, None)
    for job_id in ids:
        registry = next((r for r in registries if r.connection.zscore(r.key, job_id) is not None), None)
        if registry is None:
            unknown.append(job_id)
        else:
            where[job_id] = registry
    if unknown:
        raise FailedError(f"not in any failed registry: {', '.join(unknown)} (nothing was changed)")
    return where


def show(redis: Redis, queues: tuple[str, ...], job_id: str) -> dict:
    registry = _locate(redis, queues, [job_id])[job_id]
    job = Job.fetch(job_id, connection=redis)
    return dict(_summary(job, registry.name), traceback=job.exc_info or "", args=repr(job.args),
                kwargs=repr(job.kwargs), description=job.description, enqueued_at=str(job.enqueued_at))


def retry(redis: Redis, queues: tuple[str, ...], ids: list[str] | None, only: str | None) -> list[str]:
    """Requeue the named failed jobs, or every one (of `only`, if given) when ids is None."""
    if ids is None:
        where = {i: r for r in _registries(redis, queues, only) for i in r.get_job_ids()}
    else:
        where = _locate(redis, queues, ids)
    for job_id, registry in where.items():
        registry.requeue(job_id)
    return list(where)


def forget(redis: Redis, queues: tuple[str, ...], ids: list[str]) -> list[str]:
    where = _locate(redis, queues, ids)
    for job_id, registry in where.items():
        registry.remove(job_id, delete_job=True)
    return list(where)


def flush(redis: Redis, queues: tuple[str, ...], only: str | None, older_than: float | None = None) -> int:
    """Delete failed jobs (all, or those that failed more than `older_than` seconds ago)."""
    removed = 0
    cutoff = time.time() - older_than if older_than is not None else None
    for registry in _registries(redis, queues, only):
        ids = registry.get_job_ids()
        for job in Job.fetch_many(ids, connection=redis) if ids else []:
            if job is None:
                continue
            if cutoff is not None and (job.ended_at is None or job.ended_at.timestamp() > cutoff):
                continue
            registry.remove(job.id, delete_job=True)
            removed += 1
    return removed


def clear(redis: Redis, queues: tuple[str, ...], name: str) -> int:
    """Delete a queue's pending jobs; returns how many there were."""
    if name not in queues:
        raise FailedError(f"unknown queue {name!r} (served: {', '.join(queues) or 'none'})")
    queue = Queue(name, connection=redis)
    pending = queue.count
    queue.empty()
    return pending
