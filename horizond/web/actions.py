"""Every change the dashboard makes goes through this module: one function per action.

Job actions act on RQ's registries directly, through control/failed.py (the same code
`horizonctl retry|forget|clear` runs), so what changes is exactly what `rq` sees. Supervisor
actions (pause, continue, restart, scale) are fleet commands (fleet/commands.py), exactly what
`horizonctl pause --fleet` sends: stored desired state plus a wake-up, run by every live node
through its own command layer. The pages and their routes only ever call these functions.

Bulk actions (retry or delete every failed job matching a filter) run in a thread of
the web process (never the master), in chunks of control/failed.py's walk, and record
their progress in `P:web:bulk:ID` (a hash, kept a day), which the progress page reads.
"""

from __future__ import annotations

import secrets
import threading
import time

from redis import Redis
from rq.job import Job

from horizond.control import failed
from horizond.control.commands import CommandError
from horizond.fleet import commands as fleet_commands
from horizond.fleet.keys import FleetKeys
from horizond.web import reads

BULK_TTL = 24 * 3600
BULK_ACTIONS = ("retry", "delete")


class ActionError(Exception):
    pass


def _origin(redis: Redis, job_id: str) -> str:
    origin = redis.hget(f"rq:job:{job_id}", "origin")
    if origin is None:
        raise ActionError(f"no job {job_id!r} (it may have expired)")
    return reads.text(origin)


def retry_job(redis: Redis, job_id: str) -> None:
    try:
        failed.retry(redis, (queue := _origin(redis, job_id),), [job_id])
    except failed.FailedError as exc:
        raise ActionError(f"{exc} (queue {queue})") from None


def delete_job(redis: Redis, job_id: str) -> None:
    try:
        failed.forget(redis, (_origin(redis, job_id),), [job_id])
    except failed.FailedError as exc:
        raise ActionError(str(exc)) from None


def clear_queue(redis: Redis, queue: str) -> int:
    """Delete a queue's pending jobs; how many there were."""
    try:
        return failed.clear(redis, tuple(reads.queue_names(redis)), queue)
    except failed.FailedError as exc:
        raise ActionError(str(exc)) from None


def pause_queue(redis: Redis, prefix: str, queue: str, paused: bool) -> None:
    """Hold one queue on every node, or let it go: the same fleet-wide state as `horizonctl queue
    pause|continue` (every master reads it at its next sample and tells its workers)."""
    if queue not in reads.queue_names(redis):
        raise ActionError(f"unknown queue {queue!r}")
    key = f"{prefix}:paused-queues"
    redis.sadd(key, queue) if paused else redis.srem(key, queue)


def matcher(redis: Redis, flt: reads.Filter):
    """The listing's filter (reads.Filter) as a test of a fetched Job, for the bulk walk."""
    if not flt.text:
        return None

    def match(job: Job) -> bool:
        row = {"id": job.id, "func": reads.text(job.description).partition("(")[0]}
        if not flt.matches(row):
            row["exception"] = reads.last_line(reads.exception_of(
                redis.xrevrange(f"rq:results:{job.id}", "+", "-", count=1)))
        return flt.matches(row)
    return match


def start_bulk(redis: Redis, prefix: str, action: str, flt: reads.Filter, user: str) -> str:
    """Start retrying or deleting every failed job matching `flt`; returns the bulk id."""
    if action not in BULK_ACTIONS:
        raise ActionError(f"unknown bulk action {action!r}")
    queues = tuple(reads.queue_names(redis))
    if flt.queue and flt.queue not in queues:
        raise ActionError(f"unknown queue {flt.queue!r}")
    names = (flt.queue,) if flt.queue else queues
    with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zcard(f"rq:failed:{q}")
        total = sum(pipe.execute())
    bulk_id = secrets.token_hex(8)
    key = f"{prefix}:web:bulk:{bulk_id}"
    redis.hset(key, mapping={"action": action, "queue": flt.queue, "text": flt.text, "user": user,
                             "state": "running", "done": 0, "total": total, "registry": 0,
                             "registries": len(names), "started": time.time(), "updated": time.time()})
    redis.expire(key, BULK_TTL)
    threading.Thread(target=_run_bulk, args=(redis, key, action, flt, queues), daemon=True,
                     name=f"bulk-{bulk_id}").start()
    return bulk_id


def _run_bulk(redis: Redis, key: str, action: str, flt: reads.Filter, queues: tuple[str, ...]) -> None:
    walk = failed.retry_all if action == "retry" else failed.flush
    match, cursor = matcher(redis, flt), None
    try:
        while True:
            step = walk(redis, queues, flt.queue or None, cursor=cursor, match=match)
            cursor = step["cursor"]
            with redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, "done", step["count"])
                pipe.hset(key, mapping={"registry": cursor[0] if cursor else len(queues), "updated": time.time(),
                                        **({} if cursor else {"state": "done"})})
                pipe.execute()
            if cursor is None:
                return
    except Exception as exc:  # Redis away, a job that cannot be requeued: shown on the progress page
        redis.hset(key, mapping={"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})


def bulk_status(redis: Redis, prefix: str, bulk_id: str) -> dict | None:
    raw = redis.hgetall(f"{prefix}:web:bulk:{bulk_id}") if bulk_id.isalnum() else {}
    if not raw:
        return None
    status = {reads.text(k): reads.text(v) for k, v in raw.items()}
    if status["state"] == "running" and time.time() - float(status["updated"]) > 60:
        status["state"] = "stalled"  # its web process died: start it again to finish
    return status


FLEET_ACTIONS = ("pause", "continue", "restart", "scale")


def fleet_command(redis: Redis, prefix: str, action: str, supervisor: str, processes: str | None, user: str) -> dict:
    """A supervisor action on every node: {"id", "nodes"} of the fleet command sent."""
    if action not in FLEET_ACTIONS:
        raise ActionError(f"unknown action {action!r}; one of {', '.join(FLEET_ACTIONS)}")
    count = None
    if action == "scale":
        if processes != "auto" and not (processes or "").isdigit():
            raise ActionError(f"scale: processes must be a whole number or 'auto', got {processes!r}")
        count = None if processes == "auto" else int(processes)
    sender = f"web:{user}"
    try:
        sent = fleet_commands.send(redis, FleetKeys(prefix), sender, set(), action, supervisor, count)
    except CommandError as exc:
        raise ActionError(str(exc)) from None
    return dict(sent, nodes=[n for n in sent["nodes"] if n != sender])  # the dashboard is not a node
