"""The dashboard's daemon: the command layer's Daemon (control/daemon.py) over Redis alone.

The dashboard acts through the same `CommandLayer.handle(request, access)` as the control
socket and the fleet's channel, so one piece of code decides what an admin ("full") and a
viewer ("read") may do. The layer needs a daemon; the web process (a child of the master, or
`horizond web` alone on a host with no master) supervises nothing, so this one serves what
Redis holds and refuses the rest:

- failed jobs (retry, forget, flush, prune, clear), batches, trends: RQ's registries and
  horizond's keys, over the queues RQ knows (`rq:queues`) instead of a master's served ones;
- `fleet`, `fleet_confirmations`, `nodes`, `fleet_status`: sent and read as any node would, but
  as `web:USER`, which is not a node (it never confirms, and is left out of the nodes to wait for);
- `queue_pause`, `breakers`, `slo`: the fleet-wide keys the masters read and write;
- everything about a master's own processes (status, workers, pause, scale, restart, reload,
  terminate, queues, stats, metrics, health, cron, breaker): NoMaster, which the layer answers
  as "'pause' needs a running master: ...". The dashboard sends fleet commands instead.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time

from redis import Redis

from horizond.control.daemon import NoMaster, QueueSample
from horizond.core import fleetview, slo
from horizond.core.config import Config
from horizond.fleet import commands as fleet_commands
from horizond.fleet.keys import FleetKeys
from horizond.observe import breakers as breaker_state
from horizond.observe.slostore import SloStore
from horizond.web import reads

log = logging.getLogger("horizond.web")

WHY = "this is the dashboard's process, which supervises nothing; it acts fleet-wide (the 'fleet' command)"


class _MasterOnly:
    """Stands in for a master's supervisors, scheduler or tallies: reading it refuses the command."""

    def __init__(self, what: str):
        self._what = what

    def _refuse(self, *_args):
        raise NoMaster(f"{WHY} and has no {self._what}")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    __iter__ = __len__ = __contains__ = __getitem__ = _refuse


class WebFleet:
    """The operator's side of the fleet (fleet/commands.py), sending as `web:USER`."""

    def __init__(self, redis: Redis, prefix: str, sender: str):
        self.redis, self.keys, self.node = redis, FleetKeys(prefix), sender
        self.desired: dict[str, str] = {}

    def held(self) -> frozenset[str]:
        return frozenset()  # nothing runs here for the fleet to hold

    def entry(self) -> dict:
        raise NoMaster(f"{WHY} and is no fleet node")

    def nodes(self) -> list[dict]:
        return fleet_commands.node_rows(fleet_commands.live_entries(self.redis, self.keys))

    def view(self) -> dict:
        self.desired = fleet_commands.decode(self.redis.hgetall(self.keys.desired))
        return fleetview.merge(fleet_commands.live_entries(self.redis, self.keys), self.desired)

    def send(self, action: str, supervisor: str | None, processes: int | None) -> dict:
        sent = fleet_commands.send(self.redis, self.keys, self.node, set(), action, supervisor, processes)
        log.info("fleet command sent from the dashboard", extra={
            "event": "web_fleet_command", "id": sent["id"], "cmd": action, "supervisor": supervisor,
            "from": self.node})
        return dict(sent, nodes=[n for n in sent["nodes"] if n != self.node])  # the dashboard never confirms

    def confirmations(self, command_id: str) -> dict:
        return fleet_commands.confirmations(self.redis, self.keys, command_id)


class WebDaemon:
    """One per web process (the SLO window's closed slices are read once and kept, and the levels
    refreshed in the background, as a master does); `acting_as(user)` is the copy a request
    hands the command layer: it shares those, and sends fleet commands as that user."""

    stopping = False

    def __init__(self, config: Config, redis: Redis):
        self.config, self.redis = config, redis
        self.pid, self.started = os.getpid(), time.time()
        self.fleet = WebFleet(redis, config.redis_prefix, "web")
        self.metrics = _MasterOnly("job tallies (they are in each master's memory)")
        self._slo = SloStore()  # read by one thread at a time (_Levels)
        self._levels = _Levels()  # shared by every acting_as copy, as the store is

    def acting_as(self, user: str) -> WebDaemon:
        twin = copy.copy(self)
        twin.fleet = WebFleet(self.redis, self.config.redis_prefix, f"web:{user}")
        return twin

    # --- what only a master has ----------------------------------------------------------------

    @property
    def supervisors(self):
        return _MasterOnly("supervisors")

    @property
    def removed(self):
        return _MasterOnly("supervisors")

    @property
    def scheduler(self):
        return _MasterOnly("scheduler")

    def queue_sample(self) -> QueueSample:
        raise NoMaster(f"{WHY} and samples no queues")

    def set_paused(self, name: str | None, paused: bool) -> list[str]:
        raise NoMaster(f"{WHY} and has no supervisors")

    def restart(self, name: str | None) -> list[str]:
        raise NoMaster(f"{WHY} and has no workers")

    def reload(self) -> dict:
        raise NoMaster(f"{WHY} and runs no config")

    def stop(self, force: bool, reason: str) -> None:
        raise NoMaster(f"{WHY}; terminate stops a master")

    def cron_schedule(self) -> list[dict]:
        raise NoMaster(f"{WHY} and runs no cron entries")

    def force_breaker(self, name: str, action: str) -> None:
        raise NoMaster(f"{WHY}; 'horizonctl breaker' forces a breaker through a master")

    # --- what Redis holds --------------------------------------------------------------------

    @property
    def redis_error(self) -> str | None:
        return None  # no loop to spare: each request tries Redis and says what it met

    def redis_failed(self, exc: Exception) -> None:
        log.warning("Redis unreachable for a dashboard command", extra={"event": "web_redis_error", "error": str(exc)})

    def queues(self) -> tuple[str, ...]:
        """Every queue RQ knows (the dashboard lists them all), not one master's served ones."""
        return tuple(reads.queue_names(self.redis))

    def breaker_rows(self) -> list[dict]:
        return breaker_state.peek(self.redis, self.config.redis_prefix, self.config.breakers)

    def pause_queue(self, queue: str, paused: bool) -> None:
        key = f"{self.config.redis_prefix}:paused-queues"  # every master reads it at its next sample
        self.redis.sadd(key, queue) if paused else self.redis.srem(key, queue)
        log.warning(f"queue {'paused' if paused else 'continued'} from the dashboard, on every node", extra={
            "event": "queue_paused" if paused else "queue_continued", "queue": queue, "from": self.fleet.node})

    def paused_queues(self) -> list[str]:
        return sorted(reads.text(q) for q in self.redis.smembers(f"{self.config.redis_prefix}:paused-queues"))

    def slo_rows(self) -> list[dict]:
        """[slo]: each known queue with a level (and each level named exactly, with or without
        jobs), from the fleet-wide slices the masters write; as last read, like a master's."""
        return self._levels.rows(self._read_levels) if self.config.slos else []

    def start(self) -> None:
        """`horizond web`: read the levels' window now, so the first page need not."""
        if self.config.slos:
            self._levels.refresh(self._read_levels)

    def _read_levels(self) -> list[dict]:
        """One read of the window's open slices (the closed ones are kept) and the queue lengths."""
        slos = self.config.slos
        exact = [s.pattern for s in slos if not any(c in s.pattern for c in "*?[")]
        queues = tuple(q for q in sorted({*self.queues(), *exact}) if slo.slo_for(slos, q) is not None)
        with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(f"rq:queue:{q}")
            pending = dict(zip(queues, pipe.execute(), strict=True))
        now = time.time()
        self._slo.step(self.redis, self.config.redis_prefix, slos, queues, {}, now)  # no pending: marks nothing
        return self._slo.report(slos, queues, pending, now)


class _Levels:
    """The service levels as last read, refreshed in the background every READ_EVERY seconds
    while pages ask for them, as a master's `slo` duty refreshes its own: with 500 queues a read
    is a few hundred ms of Redis and arithmetic, which no page should wait for. Only a process's
    first read is made while a page waits. A read that fails keeps the last rows; once they are
    STALE_AFTER old, its error is raised (the layer answers "Redis unreachable ...")."""

    READ_EVERY = 2.0  # the masters write their counts every 2 s (observe/slostore.py)
    STALE_AFTER = 30.0

    def __init__(self):
        self._lock = threading.Lock()  # the cached rows and the refresh flag
        self._reading = threading.Lock()  # one read at a time: the SloStore is not thread-safe
        self._rows: list[dict] | None = None
        self._at = 0.0
        self._error: Exception | None = None
        self._refreshing = False

    def rows(self, read) -> list[dict]:
        with self._lock:
            rows, age = self._rows, time.monotonic() - self._at
            due = rows is not None and age >= self.READ_EVERY and not self._refreshing
            if due:
                self._refreshing = True
        if rows is None:
            return self._read(read)
        if due:
            threading.Thread(target=self._refresh, args=(read,), daemon=True, name="slo-read").start()
        if self._error is not None and age > self.STALE_AFTER:
            raise self._error.with_traceback(None)  # raised again each poll: its traceback must not grow
        return rows

    def refresh(self, read) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, args=(read,), daemon=True, name="slo-read").start()

    def _refresh(self, read) -> None:
        try:
            self._read(read)
        except Exception as exc:  # Redis away: kept to say once the rows grow stale
            self._error = exc
            log.warning("cannot read the service levels; the last ones are shown", extra={
                "event": "web_slo_read_failed", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            with self._lock:
                self._refreshing = False

    def _read(self, read) -> list[dict]:
        asked = time.monotonic()
        with self._reading:
            if self._rows is not None and self._at >= asked:  # read meanwhile by another thread
                return self._rows
            rows = read()
            with self._lock:
                self._rows, self._at, self._error = rows, time.monotonic(), None
        return rows
