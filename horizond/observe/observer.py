"""Observer: the master's one sampler of the queues, for balancing, status, metrics and long waits.

Queue lengths and the age of each queue's oldest job are read in two pipelined
round trips per sample (plus RQ 3's rate-limit rows); everything that shows or
uses them (the balancer, `status`, Prometheus, `stats`/`queues`, long-wait
detection) reads the sample instead of asking Redis again. The master's loop
samples every SAMPLE_EVERY seconds, and before a balancing step when the sample
is older than half that supervisor's cooldown, so Redis calls per second do
not grow with the job rate. Long waits (core/waits.py, observe/longwaits.py) and
snapshots (observe/snapshots.py) are computed from the sample elsewhere.
"""

from __future__ import annotations

import time

from redis import Redis
from rq.rate_limit import RateLimitRegistry
from rq.utils import utcparse

from horizond.core import waits
from horizond.core.counts import pools_of, processes_per_queue

SAMPLE_EVERY = 2.0


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


def start_rates(redis: Redis, queue_limits, prefix: str) -> list[dict]:
    """[limits] rates: per pattern, jobs started in the current window against the allowed.
    One round trip for all of them (their concurrency shows among RQ's rate limits)."""
    rated = [lim for lim in queue_limits if lim.rate]
    if not rated:
        return []
    now = time.time()
    with redis.pipeline(transaction=False) as pipe:
        for lim in rated:
            pipe.zcount(lim.starts_key(prefix), now - lim.rate[1], "+inf")
        counts = pipe.execute()
    return [{"pattern": lim.pattern, "allowed": lim.rate[0], "per_seconds": lim.rate[1], "started": n}
            for lim, n in zip(rated, counts, strict=True)]


class Observer:
    """The latest sample: pending jobs and oldest-job age per queue, rate-limit rows, and when."""

    def __init__(self):
        self.pending: dict[str, int] = {}
        self.ages: dict[str, float] = {}
        self.rate_limits: list[dict] = []
        self.rate_limit_keys = 0
        self.start_rates: list[dict] = []  # [limits] rate windows (start_rates)
        self.sampled_at = -SAMPLE_EVERY  # monotonic
        self.sampled_wall: float | None = None  # time.time() of the sample, for status
        self.samples = 0

    def sample(self, redis: Redis, queues, now: float, queue_limits=(), prefix: str = "horizond") -> None:
        """Read the queues (raises on a Redis error: the caller decides what that means)."""
        pending, ages = queue_depths(redis, queues)
        self.rate_limits, self.rate_limit_keys = rate_limits(redis)
        self.start_rates = start_rates(redis, queue_limits, prefix)
        self.pending, self.ages = pending, ages
        self.sampled_at, self.sampled_wall = now, time.time()
        self.samples += 1

    def age(self, now: float) -> float:
        return now - self.sampled_at

    def covers(self, queues) -> bool:
        return all(q in self.pending for q in queues)

    def working(self, master) -> tuple[dict[str, int], set[str]]:
        """Processes taking jobs per queue now (paused ones do not count), and the queues
        that only paused supervisors serve."""
        return processes_per_queue(pools_of(master.supervisors.values()))

    def estimated_waits(self, master) -> dict[str, float]:
        working, paused = self.working(master)
        return waits.estimated_waits(self.pending, self.ages, {q: master.metrics.runtime(q) for q in self.pending},
                                     working, paused)
