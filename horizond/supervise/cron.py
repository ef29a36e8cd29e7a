"""[cron.NAME] and [maintenance] in the master: each occurrence claimed once across the fleet.

Every master runs every entry; none is leader for it. An occurrence is claimed with WATCH on the
entry's key `{prefix}:cron:{NAME}` and a MULTI that records it and enqueues its job together:
of several masters that see it due, exactly one EXEC succeeds, and the claim and the job commit
or fail as one (no claimed occurrence without its job, no job without its claim). The first
master ever to see an entry only starts its clock: nothing runs for occurrences before it was
configured. After an outage of every master, the latest missed occurrence runs once on return
and the older ones are logged as missed (`cron_missed`), never enqueued.

Maintenance prunes failed jobs older than `prune_failed_hours` in budgeted slices (the loop
never stalls on 100,000 failed jobs); the master that claimed the occurrence does it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

from redis import Redis
from redis.exceptions import WatchError
from rq import Queue

from horizond.control import failed
from horizond.core import cron
from horizond.core.cron import CronEntry

log = logging.getLogger("horizond.master")

SLICE = 0.05  # seconds of pruning per loop turn
IDLE_CHECK = 60.0  # the longest the duty sleeps: a clock jump or a config reload is seen this soon
RETRY_AFTER_ERROR = 5.0


class CronRunner:
    def __init__(self, entries: tuple[CronEntry, ...], maintenance: CronEntry | None, prefix: str, node: str,
                 config: object = None):
        self.config = config  # the config it was built from: a reload builds a new runner
        self.entries = list(entries) + ([maintenance] if maintenance is not None else [])
        self.prefix = prefix
        self.node = node
        self.next_at: dict[str, float] = {}  # wall clock: skip Redis until an entry falls due
        self.pruning: dict | None = None  # {"cursor", "hours", "deleted"} while a prune is under way

    @classmethod
    def of(cls, config) -> CronRunner:
        return cls(config.cron, config.maintenance, config.redis_prefix, node_name(), config)

    def key(self, name: str) -> str:
        return f"{self.prefix}:cron:{name}"

    def step(self, redis: Redis, now: float) -> float:
        """Claim what is due; returns seconds until the next thing to do."""
        for entry in self.entries:
            if self.next_at.get(entry.name, 0.0) <= now:
                self._claim(redis, entry, now)
                self.next_at[entry.name] = cron.following(entry, now)
        if self.pruning is not None:
            self._prune_slice(redis)
            return 0.0 if self.pruning is not None else self._wait(now)
        return self._wait(now)

    def _wait(self, now: float) -> float:
        return max(0.0, min([IDLE_CHECK, *(t - now for t in self.next_at.values())]))

    def _claim(self, redis: Redis, entry: CronEntry, now: float) -> None:
        key = self.key(entry.name)
        with redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                due = cron.due(entry, _last(pipe.hget(key, "last")), now)
                if due.first:
                    pipe.multi()
                    pipe.hset(key, mapping={"last": cron.previous(entry, now), "started": now})
                    pipe.execute()
                    return
                if due.occurrence is None:
                    return
                job_id = _job_id(entry, due.occurrence) if entry.func else None
                pipe.multi()
                pipe.hset(key, mapping={"last": due.occurrence, "at": now, "node": self.node, "job": job_id or ""})
                if entry.func:
                    Queue(entry.queue, connection=redis).enqueue_call(
                        entry.func, args=entry.args, kwargs=dict(entry.kwargs), job_id=job_id, pipeline=pipe,
                        description=f"cron {entry.name} at {_iso(due.occurrence)}")
                pipe.execute()
            except WatchError:
                return  # another master claimed it first
        log.info("cron occurrence claimed", extra={
            "event": "cron_enqueued" if entry.func else "maintenance_started", "cron": entry.name,
            "occurrence": due.occurrence, "job_id": job_id, "queue": entry.queue if entry.func else None})
        if due.missed:
            log.warning("cron occurrences missed while no master ran; only the latest runs", extra={
                "event": "cron_missed", "cron": entry.name, "missed": due.missed})
        if not entry.func and entry.prune_failed_hours:
            self.pruning = {"cursor": None, "hours": entry.prune_failed_hours, "deleted": 0}

    def _prune_slice(self, redis: Redis) -> None:
        state = self.pruning
        assert state is not None
        queues = tuple(q.name for q in Queue.all(connection=redis))
        walked = failed.flush(redis, queues, None, older_than=state["hours"] * 3600, cursor=state["cursor"],
                              budget=SLICE)
        state["deleted"] += walked["count"]
        state["cursor"] = walked["cursor"]
        if walked["cursor"] is None:
            log.info("maintenance done", extra={"event": "maintenance_done", "pruned_failed": state["deleted"],
                                                "older_than_hours": state["hours"]})
            redis.hset(self.key(cron.MAINTENANCE), "pruned", state["deleted"])
            self.pruning = None

    def describe(self, redis: Redis, now: float) -> list[dict]:
        """Each entry's schedule, its next occurrence and what the fleet last claimed."""
        rows = []
        claimed = []
        with redis.pipeline(transaction=False) as pipe:
            for entry in self.entries:
                pipe.hgetall(self.key(entry.name))
            claimed = pipe.execute()
        for entry, raw in zip(self.entries, claimed, strict=True):
            info = {k.decode(): v.decode() for k, v in raw.items()}
            last = float(info["last"]) if "at" in info else None  # "last" alone: the clock's start
            rows.append({"name": entry.name, "cron": entry.cron, "timezone": entry.timezone,
                         "func": entry.func, "queue": entry.queue if entry.func else None,
                         "next": _iso(cron.following(entry, now)), "last": _iso(last) if last else None,
                         "last_job": info.get("job") or None, "last_node": info.get("node"),
                         **({"prune_failed_hours": entry.prune_failed_hours, "pruned": int(info.get("pruned", 0))}
                            if entry.func is None else {})})
        return rows


def _last(raw: bytes | None) -> float | None:
    """The last occurrence claimed; junk under the key counts as none (the clock starts again)."""
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is None or value == value and abs(value) != float("inf") else None


def _job_id(entry: CronEntry, occurrence: float) -> str:
    """One id per occurrence: a second enqueue of it could only overwrite, never duplicate."""
    return f"cron-{re.sub(r'[^A-Za-z0-9_-]', '_', entry.name)}-{int(occurrence)}"


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def node_name() -> str:
    """Who claimed an occurrence, as `cron` shows it: this host and master."""
    return f"{socket.gethostname()}:{os.getpid()}"
