"""Batches: RQ's Group (rq.group), horizond's answer to Laravel's `Bus::batch`, with progress.

A group is a Redis set of job ids (`rq:group:NAME`, listed in `rq:groups`). Progress is each
member's status, read with pipelined HGETs in slices, never the jobs' data. A member whose hash
is gone had expired after it ended (RQ keeps a finished job `result_ttl`, a failed one
`failure_ttl`); RQ's own group cleanup then drops it from the set.
"""

from __future__ import annotations

from redis import Redis
from rq.group import Group
from rq.job import Job

SLICE = 1000  # members read per pipeline
MAX_MEMBERS = 100_000  # a larger group is counted from its first members, and says so
PENDING = ("queued", "scheduled", "deferred", "started", "rate_limited")


class BatchError(Exception):
    pass


def summary(redis: Redis, name: str, ids: bool = False) -> dict:
    key = Group.get_key(name)
    total = redis.scard(key)
    if not total:
        raise BatchError(f"no batch (RQ group) named {name!r}")
    members = [m.decode() for m, _ in zip(redis.sscan_iter(key, count=SLICE), range(MAX_MEMBERS), strict=False)]
    counts = {"finished": 0, "failed": 0, "pending": 0, "canceled": 0, "stopped": 0, "expired": 0}
    failed_ids = []
    for start in range(0, len(members), SLICE):
        chunk = members[start:start + SLICE]
        with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hget(Job.key_for(job_id), "status")
            statuses = pipe.execute()
        for job_id, raw in zip(chunk, statuses, strict=True):
            status = raw.decode() if raw is not None else "expired"
            bucket = "pending" if status in PENDING else status if status in counts else "pending"
            counts[bucket] += 1
            if status == "failed":
                failed_ids.append(job_id)
    done = counts["finished"] + counts["failed"] + counts["canceled"] + counts["stopped"] + counts["expired"]
    out = {"name": name, "total": total, **counts, "complete": counts["pending"] == 0,
           "progress": round(100 * done / max(1, len(members)), 1), "counted": len(members)}
    if ids:
        out["failed_ids"] = failed_ids[:100]
    return out


def listing(redis: Redis, limit: int = 50) -> dict:
    """The groups RQ knows, each summed up; at most `limit` of them (the set is unordered)."""
    names = sorted(n.decode() for n, _ in zip(redis.sscan_iter(Group.REDIS_GROUP_KEY, count=500),
                                              range(limit * 4), strict=False))
    rows = []
    for name in names:
        try:
            rows.append(summary(redis, name))
        except BatchError:  # expired since it was listed
            continue
        if len(rows) >= limit:
            break
    return {"batches": rows, "total": redis.scard(Group.REDIS_GROUP_KEY)}
