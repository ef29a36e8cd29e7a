"""The Overview page and the live JSON snapshot (GET {base}/api/snapshot): headline figures,
the workload per queue, the nodes, and the health verdict graded by core/health.py.

Throughput comes from horizond's metric snapshots (observe/snapshots.py): the
counters are cumulative, so "jobs past hour" is the newest processed count less
the one about an hour older, summed over queues. Pending counts and oldest-job
ages are read live. Everything is bounded by the number of queues.
"""

from __future__ import annotations

import time

from redis import Redis

from horizond.control import views
from horizond.core import health
from horizond.core.config import Config
from horizond.observe import breakers as breaker_state
from horizond.observe import observer
from horizond.observe.metricstore import hourly_key
from horizond.web import reads


def _delta(new: dict | None, old: dict | None, key: str) -> int:
    if not new:
        return 0
    return max(0, int(new.get(key) or 0) - int((old or {}).get(key) or 0))


def snapshot(redis: Redis, config: Config, now: float | None = None, slo: dict | None = None) -> dict:
    """Everything the Overview shows, as JSON-ready data (the documented /api/snapshot); `slo` is
    the `slo` command's reply, graded into the health verdict as `horizonctl health` does."""
    now = time.time() if now is None else now
    queues = reads.queue_names(redis)
    sizes, ages = reads.queue_depths(redis, queues)
    interval = config.snapshot_interval
    ends = reads.snapshot_ends(redis, config.redis_prefix, queues, max(1, 3600 // interval))
    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.zcard(f"rq:failed:{q}")
        failed_kept = dict(zip(queues, pipe.execute(), strict=True))
    nodes = reads.fleet_nodes(redis, config.redis_prefix)
    fresh = lambda snap: snap if snap and now - float(snap.get("time", 0)) <= 3 * interval else None
    rows, per_minute, past_hour, failed_window, window_from = [], 0.0, 0, 0, now
    for q in queues:
        newest, hour_ago, oldest = ends[q]
        live = fresh(newest) or {}
        per_minute += float(live.get("jobs_per_minute") or 0)
        past_hour += _delta(newest, hour_ago or oldest, "processed")
        failed_window += _delta(newest, oldest, "failed")
        if oldest:
            window_from = min(window_from, float(oldest.get("time", now)))
        rows.append({"queue": q, "pending": sizes.get(q, 0), "processes": live.get("processes"),
                     "estimated_wait": live.get("estimated_wait"), "oldest_job_age": ages.get(q),
                     "jobs_per_minute": live.get("jobs_per_minute"), "runtime": live.get("recent_runtime")
                     or live.get("runtime"), "failed": failed_kept.get(q, 0)})
    hourly_failed, hours = failed_by_hour(redis, config.redis_prefix, now)
    if hours:  # the masters' hourly totals (observe/metricstore.py): a week, whatever the snapshots keep
        failed_window, window_from = hourly_failed, now - hours * 3600
    longest = max(rows, key=lambda r: r["oldest_job_age"] or 0, default=None)
    slowest = max(rows, key=lambda r: float(r["runtime"] or 0), default=None)
    busiest = max(rows, key=lambda r: float(r["jobs_per_minute"] or 0), default=None)
    live_nodes = [n for n in nodes if n.get("state") not in ("gone", "unreadable")]
    processes = sum(int(s.get("processes") or 0) for n in live_nodes for s in n.get("supervisors") or []) \
        if live_nodes else redis.scard("rq:workers")  # no fleet entries: every RQ worker registered
    return {
        "time": now,
        "headline": {
            "jobs_per_minute": round(per_minute, 1), "jobs_past_hour": past_hour,
            "failed_recent": failed_window, "failed_window_hours": round((now - window_from) / 3600, 1),
            "failed_kept": sum(failed_kept.values()), "processes": processes,
            "longest_wait": _pick(longest, "oldest_job_age"), "longest_runtime": _pick(slowest, "runtime"),
            "highest_throughput": _pick(busiest, "jobs_per_minute"),
        },
        "health": verdict(config, failed_kept, sizes, ages, slo),
        "nodes": [{"node": n.get("node"), "state": n.get("state"), "last_seen": n.get("last_seen"),
                   "supervisors": n.get("supervisors") or []} for n in nodes],
        "supervisors": supervisors(live_nodes),
        "limits": {"concurrency": observer.rate_limits(redis)[0],
                   "rates": observer.start_rates(redis, config.limits, config.redis_prefix)},
        "breakers": breaker_state.peek(redis, config.redis_prefix, config.breakers),
        "queues": rows,
        "slo": slo if slo is not None else {"configured": [], "queues": []},
    }


def supervisors(live_nodes: list[dict]) -> list[dict]:
    """Per supervisor over the live nodes: processes, the budget, and where it is paused."""
    rows: dict[str, dict] = {}
    for n in live_nodes:
        for s in n.get("supervisors") or []:
            row = rows.setdefault(s.get("name"), {"name": s.get("name"), "processes": 0, "nodes": {},
                                                  "paused_on": [], "budget": s.get("fleet_max_processes")})
            row["processes"] += int(s.get("processes") or 0)
            row["nodes"][n.get("node")] = int(s.get("processes") or 0)
            if s.get("paused") or s.get("state") == "paused":
                row["paused_on"].append(n.get("node"))
    return sorted(rows.values(), key=lambda r: r["name"] or "")


def failed_by_hour(redis: Redis, prefix: str, now: float, hours: int = 7 * 24) -> tuple[int, int]:
    """Failed jobs over the past `hours` UTC hours (this one included), from every master's hourly
    totals; and how many hours back the totals reach (0: none written yet)."""
    with redis.pipeline(transaction=False) as pipe:
        for back in range(hours):
            pipe.hget(hourly_key(prefix, now - back * 3600), "failed")
        values = pipe.execute()
    reach = max((back + 1 for back, v in enumerate(values) if v is not None), default=0)
    return sum(int(v) for v in values if v is not None and v.isdigit()), reach


def _pick(row: dict | None, key: str) -> dict | None:
    if not row or not row.get(key):
        return None
    return {"queue": row["queue"], "value": float(row[key])}


def verdict(config: Config, failed_kept: dict, sizes: dict, ages: dict, slo: dict | None = None) -> dict:
    """The same grading as `horizonctl health` (core/health.py), on what the dashboard read:
    with [slo], red while a queue misses its level, yellow while its budget burns fast."""
    limits = config.health_thresholds()
    biggest = max(sizes, key=sizes.get, default=None)
    oldest = max(ages, key=ages.get, default=None)
    checks = [
        health.Indicator("redis", None, health.GREEN, "reachable"),
        health.grade("failed_jobs", sum(failed_kept.values()), limits["failed_jobs"]),
        health.grade("queue_size", sizes.get(biggest), limits["queue_size"], f"largest: {biggest}" if biggest else ""),
        health.grade("oldest_job_age", round(ages[oldest]) if oldest else None, limits["oldest_job_age"],
                     f"on {oldest}" if oldest else "no job waiting"),
    ]
    if config.slos and slo is not None and "error" not in slo:
        checks.append(views.slo_indicator(slo["queues"]))
    return {"status": health.verdict(checks),
            "indicators": [{"name": c.name, "level": c.level, "detail": c.detail} for c in checks]}


def unreachable(error: Exception) -> dict:
    return {"status": health.RED, "indicators": [{"name": "redis", "level": health.RED,
                                                  "detail": f"unreachable: {type(error).__name__}: {error}"}]}
