"""Observer: samples the queues every few seconds for status, metrics and long waits.

Queue lengths and the age of each queue's oldest job are read in one pipelined
round trip per sample; everything that shows them (Prometheus, `stats`, health,
long-wait detection) reads the sample instead of asking Redis again.

A queue's estimated wait is the larger of how long its oldest job has waited
and pending x runtime / working processes. Over its [waits] threshold it is
logged, counted, and reported to [notify] command / webhook_url, once per queue
per five minutes. The job counters are saved to Redis from here too (metricstore).
"""

from __future__ import annotations

import json
import logging
import os
import time

from redis import Redis
from rq.rate_limit import RateLimitRegistry
from rq.utils import utcparse

from horizond.core import counts
from horizond.observe.helpers import Helpers
from horizond.observe.metricstore import MetricStore, metrics_key

log = logging.getLogger("horizond.observe")

SAMPLE_EVERY = 2.0
DEDUPE = 300.0


def queue_depths(redis: Redis, queues) -> tuple[dict[str, int], dict[str, float]]:
    """Pending jobs per queue, and the age in seconds of each queue's oldest pending job."""
    queues = list(queues)
    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.llen(f"rq:queue:{q}")
            pipe.lindex(f"rq:queue:{q}", 0)
        raw = pipe.execute()
    sizes = dict(zip(queues, raw[0::2], strict=True))
    heads = {q: h.decode() for q, h in zip(queues, raw[1::2], strict=True) if h}
    with redis.pipeline(transaction=False) as pipe:
        for job_id in heads.values():
            pipe.hget(f"rq:job:{job_id}", "enqueued_at")
        stamps = pipe.execute()
    now = time.time()
    ages = {q: max(0.0, now - utcparse(s.decode()).timestamp()) for q, s in zip(heads, stamps, strict=True) if s}
    return sizes, ages


RATE_LIMITS_SHOWN = 50


def rate_limits(redis: Redis, shown: int = RATE_LIMITS_SHOWN) -> tuple[list[dict], int]:
    """RQ 3's concurrency limits: per key its concurrency, the slots in use (jobs queued or running
    under it) and the jobs waiting as rate-limited. Two round trips; at most `shown` keys (the
    busiest first), with the number of keys in all, so a per-customer key scheme stays cheap."""
    keys = sorted(k.decode() for k in redis.smembers(RateLimitRegistry.rl_keys_key))
    if not keys:
        return [], 0
    with redis.pipeline(transaction=False) as pipe:
        for key in keys[:10 * shown]:
            registry = RateLimitRegistry(key, redis)
            pipe.hget(registry.config_key, "concurrency")
            pipe.zcard(registry.allowed_key)
            pipe.zcard(registry.rate_limited_key)
        raw = pipe.execute()
    rows = [{"key": key, "concurrency": int(c or 0), "slots_used": used, "waiting": waiting}
            for key, c, used, waiting in zip(keys, raw[0::3], raw[1::3], raw[2::3], strict=False)]
    rows.sort(key=lambda r: (-r["waiting"], -r["slots_used"], r["key"]))
    return rows[:shown], len(keys)


def snapshot_key(prefix: str, queue: str) -> str:
    return f"{prefix}:snapshots:{queue}"


class Observer:
    def __init__(self):
        self.pending: dict[str, int] = {}
        self.ages: dict[str, float] = {}
        self.rate_limits: list[dict] = []
        self.rate_limit_keys = 0
        self.sampled_at = -SAMPLE_EVERY
        self.snapshot_at = time.monotonic()
        self._notified: dict[str, float] = {}
        self.store: MetricStore | None = None
        self.helpers = Helpers()  # [notify] command and webhook processes

    def step(self, master, now: float) -> None:
        if self.store is None:
            self.store = MetricStore(metrics_key(master.config.redis_prefix, master.config.socket_path))
        self.store.step(master.redis, master.metrics, now)
        if now - self.snapshot_at >= master.config.snapshot_interval:
            self.snapshot_at = now
            self.write_snapshots(master)
        if now - self.sampled_at < SAMPLE_EVERY:
            return
        self.sampled_at = now
        try:
            self.pending, self.ages = queue_depths(master.redis, master.queues())
            self.rate_limits, self.rate_limit_keys = rate_limits(master.redis)
        except Exception:
            return  # Redis away: status and health say so on their own
        for queue, wait, threshold in self.long_waits(master, now):
            master.metrics.long_wait(queue)
            event = {"event": "long_wait", "queue": queue, "wait_seconds": round(wait, 1),
                     "threshold_seconds": threshold, "pending": self.pending.get(queue, 0),
                     "supervisor": master.metrics.supervisor_of.get(queue, _owner(master, queue)),
                     "host": os.uname().nodename, "time": time.time()}
            log.warning("long wait on a queue", extra=dict(event, event="long_wait", message_queue=queue))
            self.helpers.notify(event, master.config.notify_command, master.config.webhook_url)

    def write_snapshots(self, master) -> None:
        """One JSON entry per queue per interval, newest first; bounded by count and by TTL,
        so Redis memory grows with time kept and queues, never with jobs."""
        cfg = master.config
        keep = max(1, cfg.snapshot_keep_hours * 3600 // cfg.snapshot_interval)
        rows = master._commands.queues()
        try:
            with master.redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    key = snapshot_key(cfg.redis_prefix, row["queue"])
                    pipe.lpush(key, json.dumps(dict(row, time=time.time()), default=_finite))
                    pipe.ltrim(key, 0, keep - 1)
                    pipe.expire(key, cfg.snapshot_keep_hours * 3600 + cfg.snapshot_interval)
                pipe.execute()
        except Exception as exc:
            log.debug("snapshot skipped", extra={"event": "snapshot_failed", "error": str(exc)})

    def working(self, master) -> tuple[dict[str, int], set[str]]:
        """Processes taking jobs per queue now (paused ones do not count), and the queues
        that only paused supervisors serve."""
        return counts.processes_per_queue(master.supervisors.values(), skip_paused=True)

    def estimated_waits(self, master) -> dict[str, float]:
        """The longer of the oldest job's age and the backlog's pace. A queue nobody works
        (a crash loop, scaled to 0) will wait for ever; a paused one waits what it waited."""
        working, paused = self.working(master)
        waits = {}
        for queue, pending in self.pending.items():
            runtime = master.metrics.runtime(queue) or 0.0
            workers = working.get(queue, 0)
            if workers:
                backlog = pending * runtime / workers
            else:
                backlog = float("inf") if pending and runtime and queue not in paused else 0.0
            waits[queue] = max(self.ages.get(queue, 0.0), backlog)
        return waits

    def long_waits(self, master, now: float) -> list[tuple[str, float, int]]:
        if master.stopping:
            return []  # workers are leaving on purpose: nobody is falling behind
        out = []
        for queue, wait in self.estimated_waits(master).items():
            threshold = master.config.wait_threshold(queue)
            if threshold and wait > threshold and now - self._notified.get(queue, -DEDUPE) >= DEDUPE:
                self._notified[queue] = now
                out.append((queue, wait if wait != float("inf") else 1e9, threshold))
        return out


def _finite(value):
    return None if value == float("inf") else str(value)


def _owner(master, queue: str) -> str:
    return next((s.name for s in master.supervisors.values() for p in s.pools.values() if queue in p.queues), "")
