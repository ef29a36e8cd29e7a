"""Control commands: what each horizonctl request reads from or does to the master.

Read-only commands are open to the `[control] readers` group; the others need
full access (root, the daemon's user, or `[control] group`).
"""

from __future__ import annotations

import inspect
import json
import time
import tomllib
from typing import TYPE_CHECKING

import tomli_w
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond import __version__
from horizond.control import failed
from horizond.core import health
from horizond.observe import observer as observe
from horizond.connection import redischeck
from horizond.supervise import reloading
from horizond.core.config import MAX_PROCESSES_CAP, to_toml_dict
from horizond.connection.redisconn import RedisSpec

if TYPE_CHECKING:
    from horizond.supervise.master import Master

# Open to [control] readers: lists and counts, never job data (arguments, results, tracebacks),
# so `failed_show` is not here and a reader's `failed` list and `config` are cut (READER_VIEWS).
READ_ONLY = frozenset({"ping", "status", "config", "supervisors", "workers", "health", "failed",
                       "stats", "queues", "trends"})


class CommandError(Exception):
    pass


class Commands:
    def __init__(self, master: Master):
        self.master = master
        self._table = {
            "ping": self.ping, "status": self.status, "config": self.config, "supervisors": self.supervisors,
            "workers": self.workers, "pause": self.pause, "continue": self.resume, "scale": self.scale,
            "restart": self.restart, "reload": self.reload, "terminate": self.terminate,
            "health": self.health, "failed": self.failed, "failed_show": self.failed_show, "retry": self.retry,
            "forget": self.forget, "flush": self.flush, "prune_failed": self.prune_failed, "clear": self.clear,
            "stats": self.stats, "queues": self.queues, "trends": self.trends,
        }

    def handle(self, request: dict, peer: dict) -> dict:
        name = request["cmd"]
        command = self._table.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}; known: {', '.join(sorted(self._table))}"}
        if name not in READ_ONLY and peer.get("access") != "full":
            return {"ok": False, "error": f"permission denied: {name!r} needs full access (read-only client)"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        try:
            inspect.signature(command).bind(**args)
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {name!r}: {exc}"}
        try:
            result = command(**args)
        except (CommandError, failed.FailedError) as exc:
            return {"ok": False, "error": str(exc)}
        except (RedisConnectionError, RedisTimeout) as exc:  # the loop learns it too: no one else waits for it
            self.master.redis_failed(exc)
            return {"ok": False, "error": f"Redis unreachable ({type(exc).__name__}: {exc}); try again once it is back"}
        if peer.get("access") != "full" and name in READER_VIEWS:
            result = READER_VIEWS[name](result)
        return {"ok": True, "result": result}

    def _redis(self) -> Redis:
        """The master's client, unless Redis is known to be away: then the command fails at once
        instead of waiting out the timeout in the loop that every other caller shares."""
        if self.master.redis_error is not None:
            raise CommandError(f"Redis unreachable ({self.master.redis_error}); try again once it is back")
        return self.master.redis

    def _supervisor(self, name):
        if not isinstance(name, str) or name not in self.master.supervisors:
            known = ", ".join(sorted(self.master.supervisors)) or "none"
            raise CommandError(f"unknown supervisor {name!r} (running: {known})")
        return self.master.supervisors[name]

    def _optional_name(self, supervisor):
        if supervisor is not None:
            self._supervisor(supervisor)
        return supervisor

    # --- read-only ---------------------------------------------------------------------

    def ping(self) -> dict:
        return {"pid": self.master.pid}

    def config(self) -> dict:
        cfg = self.master.config
        return {"toml": tomli_w.dumps(to_toml_dict(cfg)), "source": cfg.source}

    def status(self) -> dict:
        master = self.master
        now = time.monotonic()
        sizes, redis_error = self._queue_sizes()
        sups = [sup.status(now, sizes) for sup in master.supervisors.values()]
        sups += [dict(sup.status(now, sizes), state="removed") for sup in master.removed]
        scheduler = master.scheduler.process
        running = list(master.supervisors.values())
        paused = bool(running) and all(s.paused for s in running)
        return {
            "state": "stopping" if master.stopping else "paused" if paused else "running",
            "pid": master.pid,
            "version": __version__,
            "config": master.config.source,
            "uptime": round(time.time() - master.started, 1),
            "redis": {"url": RedisSpec.of(master.config).where(), "ok": redis_error is None, "error": redis_error},
            "scheduler": {"pid": scheduler.pid if scheduler else None, "failures": master.scheduler.health.failures},
            "supervisors": sups,
            "rate_limits": master.observer.rate_limits,
        }

    def supervisors(self) -> list[dict]:
        return [{k: v for k, v in s.items() if k != "workers"} for s in self.status()["supervisors"]]

    def workers(self, supervisor: str | None = None) -> list[dict]:
        self._optional_name(supervisor)
        now = time.monotonic()
        return [dict(w, supervisor=sup.name) for sup in self.master.supervisors.values()
                if supervisor in (None, sup.name) for w in (p.snapshot(now) for p in sup.processes())]

    def _queue_sizes(self) -> tuple[dict[str, int | None], str | None]:
        """Queue lengths from the master's sample (at most a sample period old: a status poll costs
        Redis nothing); none while Redis is known to be away."""
        if self.master.redis_error is not None:
            return {}, self.master.redis_error
        return dict(self.master.observer.pending), None

    # --- actions -------------------------------------------------------------------------

    def pause(self, supervisor: str | None = None) -> dict:
        return {"paused": self.master.set_paused(self._optional_name(supervisor), True)}

    def resume(self, supervisor: str | None = None) -> dict:
        return {"continued": self.master.set_paused(self._optional_name(supervisor), False)}

    def scale(self, supervisor: str, processes: int | str) -> dict:
        sup = self._supervisor(supervisor)
        if processes == "auto":
            sup.pinned = None
            sup.last_balance = float("-inf")  # balance at the next step
        elif isinstance(processes, int) and not isinstance(processes, bool) and 0 <= processes <= MAX_PROCESSES_CAP:
            sup.pinned = processes
            sup.apply_pin()
        else:
            raise CommandError(f"scale: processes must be 'auto' or a whole number from 0 to {MAX_PROCESSES_CAP}, "
                               f"got {processes!r}")
        return {"supervisor": sup.name, "pinned": sup.pinned, "target": sup.target()}

    def restart(self, supervisor: str | None = None) -> dict:
        name = self._optional_name(supervisor)
        targets = [self.master.supervisors[name]] if name else list(self.master.supervisors.values())
        for sup in targets:
            sup.replace(sup.config, time.monotonic())
        return {"restarting": [s.name for s in targets]}

    def reload(self) -> dict:
        result = reloading.reload(self.master)
        if not result["applied"]:
            raise CommandError("reload refused, the running config is kept:\n  " + "\n  ".join(result["errors"]))
        return result

    def terminate(self) -> dict:
        self.master.stop(force=False, reason="horizonctl terminate")
        return {"pid": self.master.pid}

    # --- metrics ------------------------------------------------------------------------

    def queues(self) -> list[dict]:
        master = self.master
        rows = master.metrics.queue_rows(time.time(), master.observer.pending, _processes_per_queue(master))
        waits = master.observer.estimated_waits(master)
        for row in rows:
            row["estimated_wait"] = waits.get(row["queue"])
            row["oldest_job_age"] = master.observer.ages.get(row["queue"])
        return rows

    def stats(self) -> dict:
        master = self.master
        queues = self.queues()
        return {"jobs_per_minute": sum(r["jobs_per_minute"] for r in queues),
                "failed_last_hour": sum(r["failed_last_hour"] for r in queues),
                "processed": sum(r["processed"] for r in queues), "failed": sum(r["failed"] for r in queues),
                "processes": sum(len(s.live()) for s in master.supervisors.values()),
                "queues": queues, "jobs": master.metrics.job_rows(time.time()),
                "rate_limits": master.observer.rate_limits, "rate_limit_keys": master.observer.rate_limit_keys}

    def trends(self, queue: str, limit: int = 60) -> list[dict]:
        """The queue's metric snapshots, newest first (kept in Redis for [metrics] snapshot_keep_hours)."""
        if queue not in self.master.queues():
            raise CommandError(f"unknown queue {queue!r} (served: {', '.join(self.master.queues())})")
        key = observe.snapshot_key(self.master.config.redis_prefix, queue)
        return [json.loads(raw) for raw in self._redis().lrange(key, 0, _positive(limit, "limit") - 1)]

    def metrics_view(self) -> dict:
        """What /metrics shows, read from the master's own state (no Redis round trip)."""
        master = self.master
        workers: dict[tuple[str, str], int] = {}
        memory: dict[str, int] = {}
        for sup in master.supervisors.values():
            for proc in sup.processes():
                state = "stopping" if proc.stop_sent else proc.state
                workers[(sup.name, state)] = workers.get((sup.name, state), 0) + 1
                memory[sup.name] = memory.get(sup.name, 0) + proc.rss
        return {"queues": master.metrics.queues, "supervisor_of": master.metrics.supervisor_of,
                "pending": master.observer.pending, "workers": workers, "memory": memory,
                "long_waits": master.metrics.long_waits, "rate_limits": master.observer.rate_limits}

    def healthz(self) -> tuple[int, str]:
        result = self.health()
        return (503 if result["status"] == health.RED else 200), json.dumps(result)

    # --- failed jobs and health ---------------------------------------------------------

    def failed(self, queue: str | None = None, limit: int = 50) -> list[dict]:
        return failed.listing(self._redis(), self.master.queues(), queue, _positive(limit, "limit"))

    def failed_show(self, job_id: str) -> dict:
        return failed.show(self._redis(), self.master.queues(), str(job_id))

    def retry(self, ids: list[str] | None = None, queue: str | None = None, all: bool = False,  # noqa: A002
              cursor: list | None = None) -> dict:
        """Named ids at once; `all` a chunk at a time (send `cursor` back until it is null)."""
        if ids is not None:
            return {"retried": failed.retry(self._redis(), self.master.queues(), _ids(ids)), "cursor": None}
        if not (all or queue is not None):
            raise CommandError("retry: name job ids, or say 'all'")
        walked = failed.retry_all(self._redis(), self.master.queues(), queue, cursor)
        return {"retried": walked["ids"], "cursor": walked["cursor"]}

    def forget(self, ids: list[str]) -> dict:
        return {"forgotten": failed.forget(self._redis(), self.master.queues(), _ids(ids))}

    def flush(self, queue: str | None = None, cursor: list | None = None) -> dict:
        walked = failed.flush(self._redis(), self.master.queues(), queue, cursor=cursor)
        return {"deleted": walked["count"], "cursor": walked["cursor"]}

    def prune_failed(self, hours: float, queue: str | None = None, cursor: list | None = None) -> dict:
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours < 0:
            raise CommandError(f"prune-failed: --hours must be a number >= 0, got {hours!r}")
        walked = failed.flush(self._redis(), self.master.queues(), queue, older_than=hours * 3600, cursor=cursor)
        return {"deleted": walked["count"], "cursor": walked["cursor"]}

    def clear(self, queue: str) -> dict:
        return {"queue": queue, "deleted": failed.clear(self._redis(), self.master.queues(), queue)}

    def health(self) -> dict:
        """The verdict; while Redis is known to be away, from what the master knows without it
        (red), so a burst of health probes never waits out Redis's timeout in the loop."""
        master = self.master
        limits = master.config.health_thresholds()
        queues = master.queues()
        try:
            redis = self._redis()
            failed_count = failed.count(redis, queues)
            sizes, ages = observe.queue_depths(redis, queues)
            findings = redischeck.inspect(redis)
        except Exception as exc:
            if isinstance(exc, (RedisConnectionError, RedisTimeout)):
                master.redis_failed(exc)
            error = master.redis_error if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
            return _verdict([health.Indicator("redis", None, health.RED, f"unreachable: {error}"),
                             *self._local_checks(limits)])
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
        return _verdict(checks + self._local_checks(limits))

    def _local_checks(self, limits) -> list[health.Indicator]:
        """What the master knows of its own processes: no Redis needed."""
        loops = [sup.name for sup in self.master.supervisors.values()
                 if any(s.health.backing_off for s in sup.slots())]
        return [self._worker_memory(limits["worker_memory"]),
                health.Indicator("crash_loops", len(loops), health.YELLOW if loops else health.GREEN,
                                 f"crash-looping: {', '.join(loops)}" if loops else "none")]

    def _worker_memory(self, limits) -> health.Indicator:
        worst, who = None, ""
        for sup in self.master.supervisors.values():
            for proc in sup.live():
                share = proc.rss / (sup.config.memory * 1024 * 1024) if proc.rss else 0.0
                if worst is None or share > worst:
                    worst, who = share, f"worst: pid {proc.pid} of {sup.name}, {proc.rss // 1048576} MB"
        return health.grade("worker_memory", worst, limits, who)


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


def _verdict(checks: list) -> dict:
    return {"status": health.verdict(checks),
            "indicators": [{"name": c.name, "level": c.level, "value": c.value, "detail": c.detail} for c in checks]}


def _ids(ids) -> list[str]:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CommandError("expected a list of job ids")
    return ids


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandError(f"--{name} must be a whole number >= 1, got {value!r}")
    return value


def _processes_per_queue(master) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sup in master.supervisors.values():
        for pool in sup.pools.values():
            for q in pool.queues:
                counts[q] = counts.get(q, 0) + len(pool.live())
    return counts
