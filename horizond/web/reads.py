"""What the pages show, read from Redis in bounded windows.

No function here reads a whole registry: lists of jobs are merged windows of at
most WINDOW entries per registry (ZREVRANGEBYSCORE ... LIMIT), searches stop
after SEARCH_BUDGET entries and hand back a cursor to go on, and every per-queue
or per-job read is one pipelined round trip. The cost of a page follows the page
size and the number of queues, not the number of jobs (scripts/bench_web.py).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from dataclasses import dataclass

from redis import Redis
from rq.utils import utcparse

PAGE = 50
SEARCH_BUDGET = 500  # registry entries a search looks at per request: under 300 ms at 100,000 failed
STATES = {"failed": "rq:failed:{}", "completed": "rq:finished:{}", "running": "rq:wip:{}"}
JOB_FIELDS = ("description", "origin", "status", "enqueued_at", "started_at", "ended_at", "worker_name")


def text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def stamp(value) -> float | None:
    try:
        return utcparse(text(value)).timestamp() if value else None
    except ValueError:
        return None


def queue_names(redis: Redis) -> list[str]:
    """RQ's set of known queues (one entry per queue, never per job)."""
    return sorted(text(k).removeprefix("rq:queue:") for k in redis.smembers("rq:queues"))


def queue_depths(redis: Redis, queues: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Pending jobs per queue and its oldest pending job's age: two pipelined round trips."""
    from horizond.observe.observer import queue_depths as depths

    return depths(redis, queues)


# --- merged windows over per-queue registries ------------------------------------------------

@dataclass(frozen=True)
class Cursor:
    """Where the next window starts: entries scored below `score`, and the first `skip` at it."""
    score: float = float("inf")
    skip: int = 0

    def encode(self) -> str:
        return "" if self.score == float("inf") else f"{self.score:.0f}.{self.skip}"

    @classmethod
    def decode(cls, raw: str | None) -> Cursor:
        try:
            score, _, skip = (raw or "").partition(".")
            return cls(float(score), max(0, int(skip or 0))) if score else cls()
        except ValueError:
            return cls()


def window(redis: Redis, keys: dict[str, str], cursor: Cursor, limit: int) -> tuple[list[tuple], Cursor | None]:
    """Newest `limit` entries over several sorted sets (queue -> key), from `cursor` on.

    Two round trips whatever the spread: first a few entries of every set (about need / sets
    each), which fixes the score S of the need-th newest; then, only from the sets that may
    hold more at or above S, up to `need` entries down to S. So 500 queues cost about
    500 + need entries, not 500 x need. Equal scores are ordered by (queue, id), so a page
    boundary inside a second full of failures loses and repeats nothing."""
    top = "+inf" if cursor.score == float("inf") else cursor.score
    names, need = list(keys), limit + cursor.skip + 1  # one more than the page: is there a next one?
    small = max(1, -(-need // max(1, len(names))))
    batches = _fetch(redis, [(keys[q], top, "-inf", small) for q in names])
    scores = sorted((score for rows in batches for _, score in rows), reverse=True)
    floor = scores[need - 1] if len(scores) >= need else "-inf"
    again = [i for i, rows in enumerate(batches) if len(rows) == small and (floor == "-inf" or rows[-1][1] >= floor)]
    for i, rows in zip(again, _fetch(redis, [(keys[names[i]], top, floor, need) for i in again]), strict=True):
        batches[i] = rows
    merged = sorted(((score, queue, text(member)) for queue, rows in zip(names, batches, strict=True)
                     for member, score in rows), reverse=True)
    if cursor.skip:
        at = [m for m in merged if m[0] == cursor.score][cursor.skip:]
        merged = at + [m for m in merged if m[0] < cursor.score]
    page = merged[:limit]
    if len(merged) <= limit:
        return page, None
    last = page[-1][0]
    same = sum(1 for m in page if m[0] == last) + (cursor.skip if last == cursor.score else 0)
    return page, Cursor(last, same)


def _fetch(redis: Redis, ranges: list[tuple]) -> list[list]:
    with redis.pipeline(transaction=False) as pipe:
        for key, high, low, count in ranges:
            pipe.zrevrangebyscore(key, high, low, start=0, num=count, withscores=True)
        return pipe.execute() if ranges else []


def job_rows(redis: Redis, entries: list[tuple], with_exception: bool) -> list[dict]:
    """The fields a listing shows, one pipelined round trip (two with exceptions)."""
    with redis.pipeline(transaction=False) as pipe:
        for _, _, job_id in entries:
            pipe.hmget(f"rq:job:{job_id}", *JOB_FIELDS)
            if with_exception:
                pipe.xrevrange(f"rq:results:{job_id}", "+", "-", count=1)
        replies = pipe.execute()
    step = 2 if with_exception else 1
    rows = []
    for i, (score, queue, job_id) in enumerate(entries):
        values = dict(zip(JOB_FIELDS, replies[i * step], strict=True))
        description = text(values["description"])
        rows.append({"id": job_id, "queue": queue, "func": description.partition("(")[0] or "?",
                     "status": text(values["status"]) or "gone", "enqueued_at": stamp(values["enqueued_at"]),
                     "started_at": stamp(values["started_at"]), "ended_at": stamp(values["ended_at"]),
                     "worker": text(values["worker_name"]), "score": score,
                     "exception": exception_of(replies[i * step + 1]) if with_exception else ""})
    return rows


def exception_of(stream_reply) -> str:
    """The traceback in a job's latest result (RQ keeps it zlib-compressed, base64-encoded)."""
    if not stream_reply:
        return ""
    payload = stream_reply[0][1]
    raw = payload.get(b"exc_string") or payload.get("exc_string")
    if not raw:
        return ""
    try:
        return zlib.decompress(base64.b64decode(raw)).decode(errors="replace")
    except (ValueError, zlib.error):
        return ""


def last_line(traceback: str) -> str:
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def exception_class(line: str) -> str:
    """What a viewer sees of an exception: its class; the message may quote the arguments."""
    head = line.split(":", 1)[0].strip()
    return head if head.replace(".", "").replace("_", "").isalnum() else "(exception)"


@dataclass(frozen=True)
class Filter:
    queue: str = ""
    text: str = ""  # id, function, or (failed jobs) exception text; case-insensitive

    def matches(self, row: dict) -> bool:
        if not self.text:
            return True
        needle = self.text.lower()
        return any(needle in (row.get(k) or "").lower() for k in ("id", "func", "exception"))


def jobs(redis: Redis, state: str, flt: Filter, cursor: Cursor, queues: list[str], limit: int = PAGE) -> dict:
    """One page of a state's jobs, newest first; a search reads at most SEARCH_BUDGET entries."""
    names = [flt.queue] if flt.queue else queues
    keys = {q: STATES[state].format(q) for q in names}
    found, scanned, at = [], 0, cursor
    while at is not None and len(found) < limit and scanned < SEARCH_BUDGET:
        entries, after = window(redis, keys, at, limit if not flt.text else 200)
        scanned += len(entries)
        rows = job_rows(redis, entries, with_exception=state == "failed")
        for row in rows:
            row["exception"] = last_line(row["exception"])
        taken = 0
        for row in rows:
            taken += 1
            if flt.matches(row):
                found.append(row)
                if len(found) == limit:
                    break
        if taken < len(rows):  # stopped inside this window: the next page starts after the last row taken
            last = rows[taken - 1]["score"]
            same = sum(1 for r in rows[:taken] if r["score"] == last) + (at.skip if last == at.score else 0)
            after = Cursor(last, same)
        at = after
    return {"jobs": found, "cursor": at.encode() if at else None, "scanned": scanned,
            "searched_out": bool(flt.text) and at is not None and len(found) < limit}


def pending(redis: Redis, flt: Filter, queues: list[str], limit: int = PAGE) -> list[dict]:
    """The newest pending jobs: the tail of each queue's list (RPUSH'd): `limit` of one queue,
    or the newest few of each of many, merged by enqueue time."""
    names = [flt.queue] if flt.queue else queues
    each = limit if flt.queue else max(3, -(-limit // max(1, len(names))))  # the newest few of every queue
    with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.lrange(f"rq:queue:{q}", -each, -1)
        tails = pipe.execute()
    entries = [(0, q, text(j)) for q, ids in zip(names, tails, strict=True) for j in ids]
    rows = [r for r in job_rows(redis, entries, with_exception=False) if flt.matches(r)]
    rows.sort(key=lambda r: r["enqueued_at"] or 0, reverse=True)
    return rows[:limit]


def within_last_hour(rows: list[dict], now: float) -> list[dict]:
    return [r for r in rows if (r["ended_at"] or r["enqueued_at"] or now) >= now - 3600]


# --- horizond's own keys ---------------------------------------------------------------------

def snapshots(redis: Redis, prefix: str, queues: list[str], count: int) -> dict[str, list[dict]]:
    """Each queue's newest `count` snapshots (observe/snapshots.py), newest first."""
    from horizond.observe.snapshots import snapshot_key

    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.lrange(snapshot_key(prefix, q), 0, count - 1)
        replies = pipe.execute()
    return {q: [json.loads(r) for r in rows] for q, rows in zip(queues, replies, strict=True)}


def snapshot_ends(redis: Redis, prefix: str, queues: list[str], hour_index: int) -> dict[str, tuple]:
    """Per queue: (newest, about an hour before it, oldest kept) snapshot, one round trip."""
    from horizond.observe.snapshots import snapshot_key

    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            key = snapshot_key(prefix, q)
            pipe.lindex(key, 0)
            pipe.lindex(key, hour_index)
            pipe.lindex(key, -1)
        replies = pipe.execute()
    load = lambda raw: json.loads(raw) if raw else None
    return {q: tuple(load(r) for r in replies[i * 3:i * 3 + 3]) for i, q in enumerate(queues)}


def fleet_nodes(redis: Redis, prefix: str, limit: int = 200) -> list[dict]:
    """The fleet's membership entries (`P:fleet:node:NAME`), when the fleet writes them; a node
    listed in `P:fleet:nodes` whose entry expired is shown as gone."""
    names = [text(n) for n in redis.zrevrange(f"{prefix}:fleet:nodes", 0, limit - 1)]
    if not names:
        return []
    raws = redis.mget([f"{prefix}:fleet:node:{n}" for n in names])
    nodes = []
    for name, raw in zip(names, raws, strict=True):
        try:
            entry = json.loads(raw) if raw else {"node": name, "state": "gone"}
        except ValueError:
            entry = {"node": name, "state": "unreadable"}
        nodes.append(entry if isinstance(entry, dict) else {"node": name, "state": "unreadable"})
    return nodes


def workers(redis: Redis, offset: int, limit: int = PAGE) -> tuple[list[dict], int]:
    """RQ's registered workers, a page at a time (names sorted; each page one round trip)."""
    names = sorted(text(k).removeprefix("rq:worker:") for k in redis.smembers("rq:workers"))
    page = names[offset:offset + limit]
    fields = ("pid", "hostname", "birth", "last_heartbeat", "state", "queues", "successful_job_count",
              "failed_job_count")
    with redis.pipeline(transaction=False) as pipe:
        for name in page:
            pipe.hmget(f"rq:worker:{name}", *fields)
            pipe.srandmember(f"rq:worker:{name}:executions")
        replies = pipe.execute()
    now = time.time()
    rows = []
    for i, name in enumerate(page):
        values = {k: text(v) for k, v in zip(fields, replies[2 * i], strict=True)}
        execution = text(replies[2 * i + 1])
        birth = stamp(values["birth"])
        rows.append({"name": name, "pid": int(values["pid"]) if values["pid"].isdigit() else None,
                     "host": values["hostname"], "state": values["state"] or "?", "queues": values["queues"],
                     "job": execution.rpartition(":")[0] if ":" in execution else execution or None,
                     "uptime": now - birth if birth else None, "done": values["successful_job_count"] or "0",
                     "failed": values["failed_job_count"] or "0", "rss": None})
    return rows, len(names)
