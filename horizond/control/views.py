"""Presenting the daemon's state as JSON: what `status`, `workers` and `metrics` show.

Pure functions of the plain attributes the daemon interface exposes (daemon.py):
the supervising shell keeps state, this module decides how it reads to the outside,
so a supervisor or a worker handle never formats itself.
"""

from __future__ import annotations

import tomllib

import tomli_w

from horizond.control.daemon import Daemon, ProcessState, SupervisorState
from horizond.core import health


def worker(proc: ProcessState, now: float) -> dict:
    info = {"pid": proc.pid, "name": proc.name, "state": "stopping" if proc.stop_sent else proc.state,
            "uptime": round(now - proc.started, 1), "rss": proc.rss, "jobs": proc.jobs_done}
    if proc.job_id:
        info.update(job_id=proc.job_id, queue=proc.job_queue, job_started_at=proc.job_started_wall,
                    job_timeout=proc.job_timeout)
    return info


def supervisor(sup: SupervisorState, now: float, queue_sizes: dict[str, int | None]) -> dict:
    backoff = [
        {"slot": s.index, "failures": s.health.failures, "last_exit": s.health.last_exit,
         "restart_in": round(max(0.0, s.health.not_before - now), 1)}
        for s in sup.slots() if s.process is None and s.health.backing_off
    ]
    queues = {}
    for pool in sup.pools.values():
        for q in pool.queues:
            queues[q] = {"processes": len(pool.live()), "size": queue_sizes.get(q), "pool": pool.key,
                         "target": pool.target, "reason": pool.reason}
    live = sup.live()
    return {
        "name": sup.name,
        "state": sup.state,
        "processes": len(live),
        "target": sup.target(),
        "pinned": sup.pinned,
        "balance": sup.config.balance,
        "memory_ok": sup.memory_ok,
        "busy": sum(1 for p in live if p.state == "busy"),
        "retiring": len(sup.retiring),
        "queues": queues,
        "workers": [worker(p, now) for p in [*live, *sup.retiring]],
        "backoff": backoff,
    }


def metrics(daemon: Daemon) -> dict:
    """What /metrics shows, from the daemon's own state (no Redis round trip), as plain JSON."""
    workers: dict[tuple[str, str], int] = {}
    memory: dict[str, int] = {}
    for sup in daemon.supervisors.values():
        for proc in sup.processes():
            state = "stopping" if proc.stop_sent else proc.state
            workers[(sup.name, state)] = workers.get((sup.name, state), 0) + 1
            memory[sup.name] = memory.get(sup.name, 0) + proc.rss
    sample = daemon.queue_sample()
    tallies = daemon.metrics
    return {
        "queues": {q: {"supervisor": tallies.supervisor_of.get(q, ""), "processed": t.processed, "failed": t.failed,
                       "buckets": list(t.buckets), "runtime_count": t.runtime_count, "runtime_sum": t.runtime_sum,
                       "recent_wait": t.recent_wait} for q, t in tallies.queues.items()},
        "pending": dict(sample.pending),
        "workers": [{"supervisor": s, "state": st, "count": n} for (s, st), n in workers.items()],
        "memory": memory, "long_waits": dict(tallies.long_waits), "rate_limits": sample.rate_limits,
        "start_rates": sample.start_rates,
        "breakers": daemon.breaker_rows(),
        "slo": daemon.slo_rows() if daemon.config.slos else [],
    }


def slo_brief(row: dict) -> dict:
    """A queue's service level as `status` shows it: the verdict and the numbers behind it."""
    return {"queue": row["queue"], "state": row["state"], "jobs": row["jobs"], "p99": row["latency"]["p99"],
            "max_latency": row["objective"]["max_latency"], "good_rate": row["good_rate"],
            "objective": row["objective"]["success_rate"], "error_budget_remaining": row["error_budget_remaining"],
            "alerts": row["alerts"]}


def slo_indicator(rows: list[dict]) -> health.Indicator:
    """Red while a queue misses its level over the window; yellow while its budget burns fast."""
    violated = [f"{r['queue']} ({r['good_rate']:.4g}% good of {r['objective']['success_rate']:g}%)"
                for r in rows if r["state"] == "violated"]
    burning = [f"{r['queue']} ({'/'.join(r['alerts'])} burn)" for r in rows if r["state"] == "burning"]
    level = health.RED if violated else health.YELLOW if burning else health.GREEN
    parts = ([f"violated: {', '.join(violated)}"] if violated else []) + \
        ([f"budget burning fast: {', '.join(burning)}"] if burning else [])
    return health.Indicator("slo", len(violated) + len(burning), level,
                            "; ".join(parts) or f"{len(rows)} queue(s) within their levels")


def verdict(checks: list[health.Indicator]) -> dict:
    return {"status": health.verdict(checks),
            "indicators": [{"name": c.name, "level": c.level, "value": c.value, "detail": c.detail} for c in checks]}


# --- what a read-level caller sees --------------------------------------------------------

def _failed_for_readers(jobs: list[dict]) -> list[dict]:
    """The exception's class only: its message may quote the job's arguments."""
    return [dict(job, exception=_exception_class(job["exception"])) for job in jobs]


def _exception_class(line: str) -> str:
    name = line.partition(":")[0].strip()
    return name if name.replace(".", "").replace("_", "").isalnum() else ""


def _config_for_readers(shown: dict) -> dict:
    """A webhook URL often is its own secret (a token in the path): readers see its host only;
    of the [notify] command (arguments may hold a token too), the program only."""
    data = tomllib.loads(shown["toml"])
    command = data.get("notify", {}).get("command")
    if command:
        data["notify"]["command"] = [command[0], *(["***"] if len(command) > 1 else [])]
    hook = data.get("notify", {}).get("webhook_url")
    if hook:
        scheme, _, rest = hook.partition("://")
        data["notify"]["webhook_url"] = f"{scheme}://{rest.split('/', 1)[0].rpartition('@')[2]}/***"
    return dict(shown, toml=tomli_w.dumps(data))


READER_VIEWS = {"failed": _failed_for_readers, "config": _config_for_readers}
