"""The command layer: every request to the daemon, whatever carried it, is answered here.

`CommandLayer.handle(request, access)` takes a request dict ({"cmd": name, "args": {...}})
and the caller's access level ("full" or "read") and returns a reply dict ({"ok": True,
"result": ...} or {"ok": False, "error": text}). It knows no transport: the Unix socket
(server.py) works out the access level from SO_PEERCRED and passes it; /metrics and /healthz
(exporter.py) ask the read-level commands "metrics" and "health"; a fleet command read from
Redis runs as `handle(request, "full")` on each node (fleet/member.py); the dashboard's HTTP
handlers pass "full" for an admin and "read" for a viewer (web/actions.py). Every transport is a
thin adapter over `handle(request, access)`, so all of them enforce the same rules: READ_ONLY
and READER_VIEWS live here.

The commands act on the daemon through the interface in daemon.py, never on the master. The
dashboard's process has a daemon without supervisors (web/daemon.py): what only a master holds
raises NoMaster there, answered as "CMD needs a running master".
"""

from __future__ import annotations

import inspect
import json
import time

import tomli_w
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond import __version__
from horizond.connection.redisconn import RedisSpec
from horizond.control import batches, failed, healthcheck, views
from horizond.control.daemon import Daemon, NoMaster, SupervisorState
from horizond.core import counts, fleetview
from horizond.core.config import MAX_PROCESSES_CAP
from horizond.core.configtoml import to_toml_dict
from horizond.observe.snapshots import snapshot_key

FULL, READ = "full", "read"
# Open to read-level callers ([control] readers): lists and counts, never job data (arguments,
# results, tracebacks), so `failed_show` is not here and a reader's `failed` list and `config`
# are cut (READER_VIEWS).
READ_ONLY = frozenset({"ping", "status", "config", "supervisors", "workers", "health", "failed",
                       "stats", "queues", "trends", "metrics", "cron", "batches", "batch_show", "breakers", "nodes",
                       "fleet_status", "slo"})
READER_VIEWS = views.READER_VIEWS
DENIED = "permission denied"  # how a refusal for lack of access begins (the dashboard answers it with 403)


class CommandError(Exception):
    pass


class CommandLayer:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self._table = {
            "ping": self.ping, "status": self.status, "config": self.config, "supervisors": self.supervisors,
            "workers": self.workers, "pause": self.pause, "continue": self.resume, "scale": self.scale,
            "restart": self.restart, "reload": self.reload, "terminate": self.terminate,
            "health": self.health, "failed": self.failed, "failed_show": self.failed_show, "retry": self.retry,
            "forget": self.forget, "flush": self.flush, "prune_failed": self.prune_failed, "clear": self.clear,
            "stats": self.stats, "queues": self.queues, "trends": self.trends, "metrics": self.metrics,
            "cron": self.cron, "batches": self.batches, "batch_show": self.batch_show,
            "breakers": self.breakers, "breaker": self.breaker, "queue_pause": self.queue_pause,
            "nodes": self.nodes, "fleet_status": self.fleet_status, "fleet": self.fleet,
            "fleet_confirmations": self.fleet_confirmations, "slo": self.slo,
        }

    def handle(self, request: dict, access: str) -> dict:
        """One request from a caller with `access` ("full" or "read"; anything else counts as
        read) -> one reply. Never raises for the caller's mistakes; a bug in a command does."""
        name = request.get("cmd") if isinstance(request, dict) else None
        if not isinstance(name, str):
            return {"ok": False, "error": "malformed request: expected an object with a 'cmd' string"}
        command = self._table.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}; known: {', '.join(sorted(self._table))}"}
        if name not in READ_ONLY and access != FULL:
            return {"ok": False, "error": f"{DENIED}: {name!r} needs full access (read-only client)"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        try:
            inspect.signature(command).bind(**args)
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {name!r}: {exc}"}
        try:
            result = command(**args)
        except (CommandError, failed.FailedError, batches.BatchError) as exc:
            return {"ok": False, "error": str(exc)}
        except NoMaster as exc:
            return {"ok": False, "error": f"{name!r} needs a running master: {exc}"}
        except (RedisConnectionError, RedisTimeout) as exc:  # the loop learns it too: no one else waits for it
            self.daemon.redis_failed(exc)
            return {"ok": False, "error": f"Redis unreachable ({type(exc).__name__}: {exc}); try again once it is back"}
        if access != FULL and name in READER_VIEWS:
            result = READER_VIEWS[name](result)
        return {"ok": True, "result": result}

    def _redis(self) -> Redis:
        """The daemon's client, unless Redis is known to be away: then the command fails at once
        instead of waiting out the timeout in the loop that every other caller shares."""
        if self.daemon.redis_error is not None:
            raise CommandError(f"Redis unreachable ({self.daemon.redis_error}); try again once it is back")
        return self.daemon.redis

    def _supervisor(self, name) -> SupervisorState:
        if not isinstance(name, str) or name not in self.daemon.supervisors:
            known = ", ".join(sorted(self.daemon.supervisors)) or "none"
            raise CommandError(f"unknown supervisor {name!r} (running: {known})")
        return self.daemon.supervisors[name]

    def _optional_name(self, supervisor):
        if supervisor is not None:
            self._supervisor(supervisor)
        return supervisor

    # --- read-only ---------------------------------------------------------------------

    def ping(self) -> dict:
        return {"pid": self.daemon.pid}

    def config(self) -> dict:
        cfg = self.daemon.config
        return {"toml": tomli_w.dumps(to_toml_dict(cfg)), "source": cfg.source}

    def status(self) -> dict:
        daemon = self.daemon
        now = time.monotonic()
        sizes, redis_error = self._queue_sizes()
        sups = [views.supervisor(sup, now, sizes) for sup in daemon.supervisors.values()]
        sups += [dict(views.supervisor(sup, now, sizes), state="removed") for sup in daemon.removed]
        scheduler = daemon.scheduler.process
        running = list(daemon.supervisors.values())
        paused = bool(running) and all(s.paused for s in running)
        sample = daemon.queue_sample()
        return {
            "state": "stopping" if daemon.stopping else "paused" if paused else "running",
            "pid": daemon.pid,
            "version": __version__,
            "config": daemon.config.source,
            "uptime": round(time.time() - daemon.started, 1),
            "redis": {"url": RedisSpec.of(daemon.config).where(), "ok": redis_error is None, "error": redis_error},
            "scheduler": {"pid": scheduler.pid if scheduler else None, "failures": daemon.scheduler.health.failures},
            "supervisors": sups,
            "rate_limits": sample.rate_limits,
            "start_rates": sample.start_rates,
            "breakers": daemon.breaker_rows(),
            "paused_queues": daemon.paused_queues(),
            "slo": [views.slo_brief(row) for row in daemon.slo_rows()],
        }

    def supervisors(self) -> list[dict]:
        return [{k: v for k, v in s.items() if k != "workers"} for s in self.status()["supervisors"]]

    def workers(self, supervisor: str | None = None) -> list[dict]:
        self._optional_name(supervisor)
        now = time.monotonic()
        return [dict(views.worker(p, now), supervisor=sup.name) for sup in self.daemon.supervisors.values()
                if supervisor in (None, sup.name) for p in sup.processes()]

    def _queue_sizes(self) -> tuple[dict[str, int | None], str | None]:
        """Queue lengths from the master's sample (at most a sample period old: a status poll costs
        Redis nothing); none while Redis is known to be away."""
        if self.daemon.redis_error is not None:
            return {}, self.daemon.redis_error
        return dict(self.daemon.queue_sample().pending), None

    # --- actions -------------------------------------------------------------------------

    def pause(self, supervisor: str | None = None) -> dict:
        return {"paused": self.daemon.set_paused(self._optional_name(supervisor), True)}

    def resume(self, supervisor: str | None = None) -> dict:
        """A supervisor the fleet holds paused stays paused: the fleet's pause wins (README "Fleet")."""
        held = self.daemon.fleet.held()
        blocked = sorted(held if supervisor is None else held & {supervisor})
        if blocked:
            again = "horizonctl continue --fleet" + (f" {supervisor}" if supervisor else "")
            raise CommandError(f"paused fleet-wide: {', '.join(blocked)}; '{again}' continues on every node")
        return {"continued": self.daemon.set_paused(self._optional_name(supervisor), False)}

    def scale(self, supervisor: str, processes: int | str) -> dict:
        sup = self._supervisor(supervisor)
        if processes == "auto":
            sup.pin(None)
        elif isinstance(processes, int) and not isinstance(processes, bool) and 0 <= processes <= MAX_PROCESSES_CAP:
            sup.pin(processes)
        else:
            raise CommandError(f"scale: processes must be 'auto' or a whole number from 0 to {MAX_PROCESSES_CAP}, "
                               f"got {processes!r}")
        return {"supervisor": sup.name, "pinned": sup.pinned, "target": sup.target()}

    def restart(self, supervisor: str | None = None) -> dict:
        return {"restarting": self.daemon.restart(self._optional_name(supervisor))}

    def reload(self) -> dict:
        result = self.daemon.reload()
        if not result["applied"]:
            raise CommandError("reload refused, the running config is kept:\n  " + "\n  ".join(result["errors"]))
        return result

    def terminate(self) -> dict:
        self.daemon.stop(force=False, reason="horizonctl terminate")
        return {"pid": self.daemon.pid}

    # --- the fleet (horizond/fleet/: this node's membership; README "Fleet") ------------------

    def nodes(self) -> list[dict]:
        self._redis()
        return self.daemon.fleet.nodes()

    def fleet_status(self) -> dict:
        """The merged view of every live node; while Redis is away, this node alone, with the error."""
        fleet = self.daemon.fleet
        error = self.daemon.redis_error
        if error is None:
            try:
                return {**fleet.view(), "node": fleet.node, "error": None}
            except (RedisConnectionError, RedisTimeout) as exc:
                self.daemon.redis_failed(exc)
                error = f"{type(exc).__name__}: {exc}"
        return {**fleetview.merge([fleet.entry()], fleet.desired), "node": fleet.node,
                "error": f"Redis unreachable ({error}): only this node is shown"}

    def fleet(self, action: str, supervisor: str | None = None, processes: int | str | None = None) -> dict:
        """Store a fleet command for every node (pause, continue, scale: desired state; restart,
        terminate: one-off); returns its id and the nodes whose confirmations to wait for."""
        if action not in fleetview.ACTIONS:
            raise CommandError(f"fleet: unknown action {action!r}; expected one of {', '.join(fleetview.ACTIONS)}")
        if supervisor is not None and (not isinstance(supervisor, str) or not fleetview.NAME.fullmatch(supervisor)):
            raise CommandError(f"fleet: expected a supervisor name, got {supervisor!r}")
        if action == "terminate" and supervisor is not None:
            raise CommandError("terminate --fleet stops every master; it takes no supervisor")
        if action == "scale":
            if supervisor is None:
                raise CommandError("scale --fleet needs a supervisor")
            if processes == "auto":
                processes = None
            elif isinstance(processes, bool) or not isinstance(processes, int) or \
                    not 0 <= processes <= fleetview.MAX_FLEET_PROCESSES:
                raise CommandError(f"scale --fleet: processes must be 'auto' or a whole number from 0 to "
                                   f"{fleetview.MAX_FLEET_PROCESSES}, got {processes!r}")
        elif processes is not None:
            raise CommandError(f"fleet {action}: takes no process count")
        self._redis()
        return self.daemon.fleet.send(action, supervisor, processes)

    def fleet_confirmations(self, id: str) -> dict:  # noqa: A002 - the command's id, as sent
        self._redis()
        return {"id": id, "confirmed": self.daemon.fleet.confirmations(id)}

    # --- metrics ------------------------------------------------------------------------

    def queues(self) -> list[dict]:
        daemon = self.daemon
        sample = daemon.queue_sample()
        processes, _ = counts.processes_per_queue(counts.pools_of(daemon.supervisors.values()), count_paused=True)
        rows = daemon.metrics.queue_rows(time.time(), sample.pending, processes)
        for row in rows:
            row["estimated_wait"] = sample.estimated_waits.get(row["queue"])
            row["oldest_job_age"] = sample.ages.get(row["queue"])
        return rows

    def stats(self) -> dict:
        daemon = self.daemon
        sample = daemon.queue_sample()
        queues = self.queues()
        return {"jobs_per_minute": sum(r["jobs_per_minute"] for r in queues),
                "failed_last_hour": sum(r["failed_last_hour"] for r in queues),
                "processed": sum(r["processed"] for r in queues), "failed": sum(r["failed"] for r in queues),
                "processes": sum(len(s.live()) for s in daemon.supervisors.values()),
                "queues": queues, "jobs": daemon.metrics.job_rows(time.time()),
                "rate_limits": sample.rate_limits, "rate_limit_keys": sample.rate_limit_keys}

    def trends(self, queue: str, limit: int = 60) -> list[dict]:
        """The queue's metric snapshots, newest first (kept in Redis for [metrics] snapshot_keep_hours)."""
        if queue not in self.daemon.queues():
            raise CommandError(f"unknown queue {queue!r} (served: {', '.join(self.daemon.queues())})")
        key = snapshot_key(self.daemon.config.redis_prefix, queue)
        return [json.loads(raw) for raw in self._redis().lrange(key, 0, _positive(limit, "limit") - 1)]

    def slo(self) -> dict:
        """[slo]: each served queue's service level over its window, fleet-wide as last read (no Redis call)."""
        cfg = self.daemon.config
        return {"configured": [s.pattern for s in cfg.slos], "queues": self.daemon.slo_rows()}

    def metrics(self) -> dict:
        """What /metrics shows, from the daemon's own state (no Redis round trip)."""
        return views.metrics(self.daemon)

    # --- failed jobs and health ---------------------------------------------------------

    def cron(self) -> list[dict]:
        self._redis()  # Redis away: say so at once
        return self.daemon.cron_schedule()

    def breakers(self) -> list[dict]:
        return self.daemon.breaker_rows()

    def breaker(self, action: str, name: str) -> dict:
        if action not in ("open", "close"):
            raise CommandError(f"breaker: expected 'open' or 'close', got {action!r}")
        known = [b.name for b in self.daemon.config.breakers]
        if name not in known:
            raise CommandError(f"unknown breaker {name!r} (configured: {', '.join(known) or 'none'})")
        self._redis()
        self.daemon.force_breaker(name, action)
        return {"breaker": name, "forced": action}

    def queue_pause(self, queue: str, paused: bool) -> dict:
        """Pause or continue one queue on every node (held like an open breaker's queues)."""
        if not isinstance(queue, str) or not queue or len(queue) > 200 or not isinstance(paused, bool):
            raise CommandError("queue pause: expected a queue name and paused true or false")
        self._redis()
        self.daemon.pause_queue(queue, paused)
        return {"queue": queue, "paused": paused}

    def batches(self, limit: int = 50) -> dict:
        return batches.listing(self._redis(), _positive(limit, "limit"))

    def batch_show(self, name: str) -> dict:
        if not isinstance(name, str) or not name:
            raise CommandError("batch show: NAME must be a batch (RQ group) name")
        return batches.summary(self._redis(), name, ids=True)

    def failed(self, queue: str | None = None, limit: int = 50) -> list[dict]:
        return failed.listing(self._redis(), self.daemon.queues(), queue, _positive(limit, "limit"))

    def failed_show(self, job_id: str) -> dict:
        return failed.show(self._redis(), self.daemon.queues(), str(job_id))

    def retry(self, ids: list[str] | None = None, queue: str | None = None, all: bool = False,  # noqa: A002
              cursor: list | None = None, match: str | None = None) -> dict:
        """Named ids at once; `all` a chunk at a time (send `cursor` back until it is null), only
        the jobs whose id, function or exception line holds `match` when it is given."""
        if ids is not None:
            if match is not None:
                raise CommandError("retry: --match goes with 'all' (retry all --match TEXT)")
            return {"retried": failed.retry(self._redis(), self.daemon.queues(), _ids(ids)), "cursor": None}
        if not (all or queue is not None):
            raise CommandError("retry: name job ids, or say 'all'")
        walked = failed.retry_all(self._redis(), self.daemon.queues(), queue, cursor, match=failed.matching(match))
        return {"retried": walked["ids"], "cursor": walked["cursor"]}

    def forget(self, ids: list[str]) -> dict:
        return {"forgotten": failed.forget(self._redis(), self.daemon.queues(), _ids(ids))}

    def flush(self, queue: str | None = None, cursor: list | None = None, match: str | None = None) -> dict:
        """Every failed job (of `queue`; holding `match` in its id, function or exception line)."""
        walked = failed.flush(self._redis(), self.daemon.queues(), queue, cursor=cursor, match=failed.matching(match))
        return {"deleted": walked["count"], "cursor": walked["cursor"]}

    def prune_failed(self, hours: float, queue: str | None = None, cursor: list | None = None) -> dict:
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or hours < 0:
            raise CommandError(f"prune-failed: --hours must be a number >= 0, got {hours!r}")
        walked = failed.flush(self._redis(), self.daemon.queues(), queue, older_than=hours * 3600, cursor=cursor)
        return {"deleted": walked["count"], "cursor": walked["cursor"]}

    def clear(self, queue: str) -> dict:
        return {"queue": queue, "deleted": failed.clear(self._redis(), self.daemon.queues(), queue)}

    def health(self) -> dict:
        return healthcheck.verdict(self.daemon, self._redis, CommandError)


def _ids(ids) -> list[str]:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise CommandError("expected a list of job ids")
    return ids


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommandError(f"--{name} must be a whole number >= 1, got {value!r}")
    return value
