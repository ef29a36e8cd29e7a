"""Failed jobs across the served queues: list, show, retry, forget, flush, prune; and clearing a queue.

Thin wrappers over RQ's FailedJobRegistry, so what they change is exactly what
`rq` and rq-dashboard see. Every command that names job ids checks all of them
first: an unknown id is an error that changes nothing.

The bulk commands (retry all, flush, prune) run in the master's loop, so each
request works for at most BUDGET seconds and returns a cursor; horizonctl sends
the cursor back until the walk is done. A registry of 100,000 failed jobs thus
never holds the loop (watchdog, reaping, other clients) for more than a moment.
The cursor also carries when the walk began: jobs that fail after that (a retried
job failing again, say) are left alone, so a walk always ends and acts once per job.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.utils import as_text, str_to_date

BUDGET = 0.5  # seconds of loop time per bulk request
BATCH = 100
# what `failed` and `failed show` print of a job's fields, in characters: a job with 50 MB of
# arguments must not make a 50 MB reply (the control socket refuses replies over 2 MiB)
SHOWN = 10_000  # args, kwargs, description: the start is shown
SHOWN_TRACEBACK = 50_000  # the end is shown: that is where the exception is
SHOWN_IN_LIST = 300  # function name and exception line in the listing
MAX_CALL = 1024 * 1024  # bytes of a job's serialized call (function, arguments) unpacked in the master's loop
NOT_UNPACKED = f"[not shown: over {MAX_CALL} bytes serialized, too big to unpack in the daemon]"

# what a bulk action did with one registry entry
DONE, GONE, KEPT = "done", "gone", "kept"


class FailedError(Exception):
    pass


def _registries(redis: Redis, queues: tuple[str, ...], only: str | None) -> list[FailedJobRegistry]:
    if only is not None and only not in queues:
        raise FailedError(f"unknown queue {only!r} (served: {_names(queues)})")
    return [FailedJobRegistry(q, connection=redis) for q in ((only,) if only else queues)]


def _names(queues: tuple[str, ...], shown: int = 20) -> str:
    """The served queues for an error message: the first few of 500 say enough."""
    more = f", ... ({len(queues)} in all)" if len(queues) > shown else ""
    return (", ".join(queues[:shown]) or "none") + more


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _cut(text: str | None, limit: int, keep_end: bool = False) -> str | None:
    """At most `limit` characters of `text`, with a note saying what was left out."""
    if text is None or len(text) <= limit:
        return text
    if keep_end:
        return f"[cut: {len(text)} characters, the last {limit} shown]\n" + text[-limit:]
    return text[:limit] + f" [cut: {len(text)} characters, the first {limit} shown]"


_SUMMARY = ("id", "queue", "func", "failed_at", "exception")


def _summary(job: Job, queue: str) -> dict:
    ended = job.ended_at.timestamp() if job.ended_at else None
    return {"id": job.id, "queue": queue, "func": _cut(job.func_name, SHOWN_IN_LIST), "failed_at": ended,
            "exception": _cut(_last_line(job.exc_info), SHOWN_IN_LIST)}


def _oversized(redis: Redis, ids: list[str]) -> set[str]:
    """Jobs whose call is over MAX_CALL bytes: never fetched whole nor unpacked in the master's
    loop (50 MB of arguments held it 0.3 s per request; a zip bomb, any time). At most MAX_CALL
    stored bytes are read, and at most MAX_CALL + 1 unpacked, to tell."""
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hstrlen(Job.key_for(job_id), "data")
        sizes = dict(zip(ids, pipe.execute(), strict=True))
    big = {job_id for job_id, size in sizes.items() if size > MAX_CALL}
    small = [job_id for job_id, size in sizes.items() if 0 < size <= MAX_CALL]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in small:
            pipe.hget(Job.key_for(job_id), "data")
        for job_id, raw in zip(small, pipe.execute(), strict=True):
            try:
                unpacked = len(zlib.decompressobj().decompress(raw or b"", MAX_CALL + 1))
            except zlib.error:  # stored uncompressed
                unpacked = len(raw or b"")
            if unpacked > MAX_CALL:
                big.add(job_id)
    return big


def _bare(redis: Redis, job_id: str, queue: str) -> dict:
    """What `show` says of a job whose call is too big to unpack: its hash and result without it."""
    fields = redis.hmget(Job.key_for(job_id), "description", "enqueued_at", "ended_at")
    description, enqueued, ended = (as_text(v) if v else None for v in fields)
    traceback = Job(job_id, connection=redis).exc_info or ""  # from its result; the job itself is not fetched
    return {"id": job_id, "queue": queue, "func": _cut((description or "?").partition("(")[0], SHOWN_IN_LIST),
            "failed_at": str_to_date(ended).timestamp() if ended else None,
            "exception": _cut(_last_line(traceback), SHOWN_IN_LIST),
            "traceback": _cut(traceback, SHOWN_TRACEBACK, keep_end=True), "args": NOT_UNPACKED,
            "kwargs": NOT_UNPACKED, "description": _cut(description, SHOWN),
            "enqueued_at": str(str_to_date(enqueued) if enqueued else None)}


def listing(redis: Redis, queues: tuple[str, ...], only: str | None, limit: int) -> list[dict]:
    """Newest first, at most `limit`."""
    out = []
    for registry in _registries(redis, queues, only):
        ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)  # newest `limit` of each queue
        big = _oversized(redis, ids) if ids else set()
        out += [{k: v for k, v in _bare(redis, job_id, registry.name).items() if k in _SUMMARY} for job_id in big]
        fetched = [job_id for job_id in ids if job_id not in big]
        for job in Job.fetch_many(fetched, connection=redis) if fetched else []:
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
    """Each job's failed registry: its origin queue's, checked first (two pipelined round trips
    whatever the number of queues); only a job not found there (its hash expired, say) is looked
    for in every registry, also in one round trip."""
    if not ids:
        raise FailedError("no job id given")
    registries = {q: FailedJobRegistry(q, connection=redis) for q in queues}
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(Job.key_for(job_id), "origin")
        origins = [as_text(o) if o else None for o in pipe.execute()]
    where = _found(redis, {job_id: [registries[o]] for job_id, o in zip(ids, origins, strict=True) if o in registries})
    rest = [job_id for job_id in ids if job_id not in where]
    where.update(_found(redis, {job_id: list(registries.values()) for job_id in rest}) if rest else {})
    unknown = [job_id for job_id in ids if job_id not in where]
    if unknown:
        raise FailedError(f"not in any failed registry: {', '.join(unknown)} (nothing was changed)")
    return {job_id: where[job_id] for job_id in ids}


def _found(redis: Redis, candidates: dict[str, list[FailedJobRegistry]]) -> dict[str, FailedJobRegistry]:
    """job id -> the first of its candidate registries that holds it; one pipelined round trip."""
    pairs = [(job_id, registry) for job_id, options in candidates.items() for registry in options]
    with redis.pipeline(transaction=False) as pipe:
        for job_id, registry in pairs:
            pipe.zscore(registry.key, job_id)
        scores = pipe.execute() if pairs else []
    where: dict[str, FailedJobRegistry] = {}
    for (job_id, registry), score in zip(pairs, scores, strict=True):
        if score is not None:
            where.setdefault(job_id, registry)
    return where


def show(redis: Redis, queues: tuple[str, ...], job_id: str) -> dict:
    registry = _locate(redis, queues, [job_id])[job_id]
    if _oversized(redis, [job_id]):
        return _bare(redis, job_id, registry.name)
    job = Job.fetch(job_id, connection=redis)
    return dict(_summary(job, registry.name), traceback=_cut(job.exc_info or "", SHOWN_TRACEBACK, keep_end=True),
                args=_cut(repr(job.args), SHOWN), kwargs=_cut(repr(job.kwargs), SHOWN),
                description=_cut(job.description, SHOWN), enqueued_at=str(job.enqueued_at),
                policy=_policy(job))


def _policy(job: Job) -> dict:
    """What governed its tries: RQ's counters, and horizond's per-job options with what they
    counted (exceptions, releases) and why the retries stopped (worker/jobcontrol.py)."""
    mine = job.meta.get("horizond") if isinstance(job.meta, dict) else None
    return {"retries_left": job.retries_left, "retry_intervals": job.retry_intervals,
            "number_of_retries": job.number_of_retries, **(mine if isinstance(mine, dict) else {})}


MAX_MATCH = 200  # characters of `--match` text


def matching(text: str | None) -> Callable[[Job], bool] | None:
    """`retry all --match TEXT`, `flush --match TEXT`, and the dashboard's "every job matching the
    filter": a job whose id, function or exception line holds TEXT, in any case. These are the
    fields the dashboard's failed-jobs search shows, so a bulk action acts on exactly the jobs the
    search lists. The exception is read (one more round trip) only when id and function miss."""
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_MATCH:
        raise FailedError(f"--match must be some text of at most {MAX_MATCH} characters, got {text!r:.60}")
    needle = text.strip().lower()

    def match(job: Job) -> bool:
        func = as_text(job.description or "").partition("(")[0]
        if needle in job.id.lower() or needle in func.lower():
            return True
        result = job.latest_result()
        return needle in _last_line(result.exc_string if result is not None else None).lower()
    return match


def retry(redis: Redis, queues: tuple[str, ...], ids: list[str]) -> list[str]:
    """Requeue the named failed jobs (all of them are checked first)."""
    where = _locate(redis, queues, ids)
    for job_id, registry in where.items():
        registry.requeue(job_id)
    return list(where)


def retry_all(redis: Redis, queues: tuple[str, ...], only: str | None, cursor=None,
              budget: float | None = None, match: Callable[[Job], bool] | None = None) -> dict:
    """Requeue failed jobs, oldest first, for up to `budget` seconds (see the module doc)."""
    def requeue(registry: FailedJobRegistry, job_id: str, job: Job | None) -> str:
        if job is None:
            registry.remove(job_id)  # its hash expired: a dangling entry
            return GONE
        try:
            registry.requeue(job)
        except (InvalidJobOperation, NoSuchJobError):  # taken by someone else meanwhile
            return GONE
        return DONE
    return _walk(redis, queues, only, cursor, budget, requeue, match)


def forget(redis: Redis, queues: tuple[str, ...], ids: list[str]) -> list[str]:
    where = _locate(redis, queues, ids)
    for job_id, registry in where.items():
        registry.remove(job_id, delete_job=True)
    return list(where)


def flush(redis: Redis, queues: tuple[str, ...], only: str | None, older_than: float | None = None,
          cursor=None, budget: float | None = None, match: Callable[[Job], bool] | None = None) -> dict:
    """Delete failed jobs (all, or those that failed more than `older_than` seconds ago)."""
    cutoff = time.time() - older_than if older_than is not None else None

    def delete(registry: FailedJobRegistry, job_id: str, job: Job | None) -> str:
        if job is None:
            registry.remove(job_id)
            return GONE
        if cutoff is not None and (job.ended_at is None or job.ended_at.timestamp() > cutoff):
            return KEPT
        registry.remove(job, delete_job=True)
        return DONE
    return _walk(redis, queues, only, cursor, budget, delete, match)


def _walk(redis: Redis, queues: tuple[str, ...], only: str | None, cursor, budget: float | None,
          act: Callable[[FailedJobRegistry, str, Job | None], str],
          match: Callable[[Job], bool] | None = None) -> dict:
    """Apply `act` to failed-registry entries from `cursor` ([registry, offset]; None: the
    start) until all are seen or `budget` (default BUDGET) is spent, taking at least one step
    (a batch, or past an empty registry), so every request moves the walk on. Entries `act` keeps advance the offset;
    entries it removes shift the rest down, so the offset stays. With `match` (the
    dashboard's filter) only the jobs it accepts are acted on; the others are kept."""
    registries = _registries(redis, queues, only)
    index, offset, began = _cursor(cursor)
    deadline = time.monotonic() + (BUDGET if budget is None else budget)
    done, ids_done, steps = 0, [], 0
    while index < len(registries) and (steps == 0 or time.monotonic() < deadline):
        steps += 1
        registry = registries[index]
        ids = registry.get_job_ids(offset, offset + BATCH - 1, cleanup=False)
        if not ids:
            index, offset = index + 1, 0
            continue
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=redis), strict=True):
            failed_since = job is not None and job.ended_at is not None and job.ended_at.timestamp() > began
            skipped = failed_since or (match is not None and job is not None and not match(job))
            outcome = KEPT if skipped else act(registry, job_id, job)
            if outcome == KEPT:
                offset += 1
            elif outcome == DONE:
                done += 1
                ids_done.append(job_id)
    return {"count": done, "ids": ids_done,
            "cursor": [index, offset, began] if index < len(registries) else None}


def _cursor(cursor) -> tuple[int, int, float]:
    """[registry index, offset, when the walk began]; None starts a walk now."""
    if cursor is None:
        return 0, 0, time.time()
    if (not isinstance(cursor, list) or len(cursor) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in cursor[:2])
            or isinstance(cursor[2], bool) or not isinstance(cursor[2], (int, float))):
        raise FailedError(f"cursor must be [registry, offset, began] as returned, got {cursor!r}")
    return cursor[0], cursor[1], float(cursor[2])


def clear(redis: Redis, queues: tuple[str, ...], name: str) -> int:
    """Delete a queue's pending jobs; returns how many there were."""
    if name not in queues:
        raise FailedError(f"unknown queue {name!r} (served: {', '.join(queues) or 'none'})")
    queue = Queue(name, connection=redis)
    pending = queue.count
    queue.empty()
    return pending
