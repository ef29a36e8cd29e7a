"""`health`: the green/yellow/red verdict of a daemon and its Redis (the command layer's).

Apart from commands.py because it is the one command that judges rather than reports: it reads
the failed registries, queue depths and Redis' own settings, and grades them against the
[health] thresholds (core/health.py decides, this gathers). While Redis is known to be away the
verdict comes from what the daemon knows without it, so a burst of health probes never waits
out Redis' timeout in the master's loop.
"""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond.connection import redischeck
from horizond.control import failed, views
from horizond.control.daemon import Daemon
from horizond.core import health
from horizond.observe import observer as observe


def verdict(daemon: Daemon, connect: Callable[[], Redis], away: type[Exception]) -> dict:
    """The verdict; while Redis is known to be away, from what the daemon knows without it
    (red), so a burst of health probes never waits out Redis's timeout in the loop."""
    limits = daemon.config.health_thresholds()
    queues = daemon.queues()
    try:
        redis = connect()
        failed_count = failed.count(redis, queues)
        sizes, ages = observe.queue_depths(redis, queues)
        findings = redischeck.inspect(redis)
    except Exception as exc:
        if isinstance(exc, (RedisConnectionError, RedisTimeout)):
            daemon.redis_failed(exc)
        error = daemon.redis_error if isinstance(exc, away) else f"{type(exc).__name__}: {exc}"
        return views.verdict([health.Indicator("redis", None, health.RED, f"unreachable: {error}"),
                              *_local_checks(daemon, limits)])
    biggest = max(sizes, key=sizes.get, default=None)
    oldest = max(ages, key=ages.get, default=None)
    warnings = [f.message for f in findings if f.level == "warning"]
    notes = [f.message for f in findings if f.level == "info"]
    checks = [
        health.Indicator("redis", None, health.GREEN, "; ".join(["reachable", *notes])),
        health.Indicator("redis_config", None, health.YELLOW if warnings else health.GREEN,
                         "; ".join(warnings) or "noeviction, LMOVE available"),
        health.grade("failed_jobs", failed_count, limits["failed_jobs"]),
        health.grade("queue_size", sizes.get(biggest), limits["queue_size"],
                     f"largest: {biggest}" if biggest else ""),
        health.grade("oldest_job_age", round(ages[oldest]) if oldest else None, limits["oldest_job_age"],
                     f"on {oldest}" if oldest else "no job waiting"),
    ]
    return views.verdict(checks + _local_checks(daemon, limits))


def _local_checks(daemon: Daemon, limits) -> list[health.Indicator]:
    """What the daemon knows of its own processes: no Redis needed."""
    loops = [sup.name for sup in daemon.supervisors.values()
             if any(s.health.backing_off for s in sup.slots())]
    tripped = [f"{b['name']} ({b['state']})" for b in daemon.breaker_rows()
               if b.get("state") in ("open", "half_open")]
    return [_worker_memory(daemon, limits["worker_memory"]),
            health.Indicator("crash_loops", len(loops), health.YELLOW if loops else health.GREEN,
                             f"crash-looping: {', '.join(loops)}" if loops else "none"),
            *([views.slo_indicator(daemon.slo_rows())] if daemon.config.slos else []),
            *([health.Indicator("breakers", len(tripped), health.YELLOW if tripped else health.GREEN,
                                f"open: {', '.join(tripped)}" if tripped else "all closed")]
              if daemon.config.breakers else [])]


def _worker_memory(daemon: Daemon, limits) -> health.Indicator:
    worst, who = None, ""
    for sup in daemon.supervisors.values():
        for proc in sup.live():
            share = proc.rss / (sup.config.memory * 1024 * 1024) if proc.rss else 0.0
            if worst is None or share > worst:
                worst, who = share, f"worst: pid {proc.pid} of {sup.name}, {proc.rss // 1048576} MB"
    return health.grade("worker_memory", worst, limits, who)
