"""Queue limits at the start of a job: admit it, or set it aside without spending a try.

One script call, only for jobs of a limited queue (core/limits.py), before the job starts:
- concurrency: RQ 3's own RateLimit registries (`rq:rl:KEY:allowed` / `:rate_limited`). An
  admitted job takes a slot and carries `rate_limit_key`/`rate_limit_concurrency` as if it had
  been enqueued with `rate_limit=RateLimit(KEY, N)`, so RQ's own code releases the slot when it
  ends (and horizond's settling when its worker dies) and promotes the next waiting job. Over the
  limit the job waits in RQ's `rate_limited` set, status `rate_limited`, until a slot frees:
  taken off its queue once, no busy loop, no try spent; `rq info`, status and /metrics show it.
- rate: a sliding window of starts (`{prefix}:limit:PATTERN:starts`, Redis's clock). Over it the
  job is scheduled (RQ's ScheduledJobRegistry) for when the window frees a start: no try spent.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq.job import Job
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry

from horizond.core.limits import QueueLimit

log = logging.getLogger("horizond.worker")

ADMITTED, WAITING, SCHEDULED = 2, 0, 1

# KEYS: job, intermediate list, allowed, rate_limited, rl config, rl keys set, starts, scheduled
# ARGV: job id, concurrency (0: none), rl key, rate jobs (0: none), rate seconds
_ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local id, concurrency, rate, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local holds = false
if concurrency > 0 then
    redis.call('SADD', KEYS[6], ARGV[3])
    redis.call('HSET', KEYS[5], 'concurrency', concurrency)
    redis.call('HSET', KEYS[1], 'rate_limit_key', ARGV[3], 'rate_limit_concurrency', concurrency)
    holds = redis.call('ZSCORE', KEYS[3], id)
    if not holds and redis.call('ZCARD', KEYS[3]) >= concurrency then
        redis.call('ZADD', KEYS[4], now, id)
        redis.call('HSET', KEYS[1], 'status', 'rate_limited')
        redis.call('LREM', KEYS[2], 1, id)
        return {0, '0', holds and 1 or 0}
    end
end
if rate > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - window)
    if redis.call('ZCARD', KEYS[7]) >= rate then
        local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
        local at = tonumber(oldest[2]) + window
        redis.call('ZADD', KEYS[8], math.ceil(at), id)
        redis.call('HSET', KEYS[1], 'status', 'scheduled')
        redis.call('LREM', KEYS[2], 1, id)
        return {1, tostring(at - now), holds and 1 or 0}
    end
    redis.call('ZADD', KEYS[7], now, id .. ':' .. tostring(now))
    redis.call('PEXPIRE', KEYS[7], math.ceil(window * 1000))
end
if concurrency > 0 and not holds then
    redis.call('ZADD', KEYS[3], now, id)
end
return {2, '0', holds and 1 or 0}
"""


def admit(connection: Redis, job: Job, queue: Queue, limit: QueueLimit, prefix: str) -> int:
    """ADMITTED (start it), WAITING (in RQ's rate_limited set) or SCHEDULED (rate window)."""
    rl_key = limit.rate_limit_key(prefix)
    registry = RateLimitRegistry(rl_key, connection)
    rate_jobs, rate_window = limit.rate or (0, 1.0)
    script = connection.register_script(_ADMIT)
    verdict, wait, held = script(
        keys=[job.key, f"{queue.key}:intermediate", registry.allowed_key, registry.rate_limited_key,
              registry.config_key, RateLimitRegistry.rl_keys_key, limit.starts_key(prefix),
              queue.scheduled_job_registry.key],
        args=[job.id, limit.concurrency, rl_key, rate_jobs, rate_window])
    if limit.concurrency:
        job.rate_limit_key, job.rate_limit_concurrency = rl_key, limit.concurrency
    if verdict == SCHEDULED and held:  # a promoted job's slot must not wait out the window with it
        registry.release_and_enqueue(job.id)
    if verdict != ADMITTED:
        log.debug("job set aside by a queue limit", extra={
            "event": "job_limited", "job_id": job.id, "limit": limit.pattern,
            "how": "rate_limited" if verdict == WAITING else f"scheduled in {float(wait):.2f} s"})
    return verdict
