"""A master as a fleet member: its entry every heartbeat, the desired state, the fleet's commands.

One pipelined round trip per heartbeat: SET the entry (PX 3 heartbeats, GET the old value to
spot another master under the same node id), ZADD the nodes set, HGETALL the desired state and
XREAD the commands added since the last beat (a pruning ZREMRANGEBYSCORE every PRUNE_EVERY
beats). A PUBLISH on the wake channel (a pub/sub connection in the master's selector, no thread)
makes the duty run at once, so a command lands within a second whatever the heartbeat.

A command is a thin transport into the command layer: it runs as `handle(request, "full")`, the
same call the control socket makes. The master never waits for another node: each node writes
its own confirmation, the sender only reads them.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond import sysutil
from horizond.control.daemon import SupervisorState
from horizond.core import fleetview
from horizond.core.config import Config
from horizond.fleet import commands
from horizond.fleet.keys import ACK_TTL, BEATS_TO_EXPIRY, FleetKeys

log = logging.getLogger("horizond.fleet")

PRUNE_EVERY = 30  # beats between prunes of the nodes set
PRUNE_AFTER = 86_400  # a node unseen this long leaves the nodes set (its entry expired long before)
CONFLICT_LOG_EVERY = 60.0


class FleetConflict(Exception):
    """Another live master holds this node id: this one refuses to start."""


class FleetHost(Protocol):
    """What a member needs of its master (implemented by supervise/master.py)."""

    config: Config
    redis: Redis
    selector: selectors.BaseSelector

    @property
    def supervisors(self) -> dict[str, SupervisorState]: ...
    @property
    def redis_error(self) -> str | None: ...
    def redis_failed(self, exc: Exception) -> None: ...


class FleetMember:
    def __init__(self, host: FleetHost, handle: Callable[[dict, str], dict], wake: Callable[[], None]):
        self.host, self.handle, self.wake = host, handle, wake
        self.node = host.config.fleet_node or sysutil.hostname()
        self.hostname = sysutil.hostname()
        self.token = sysutil.start_token(os.getpid())  # this process for good: a stranger at our pid has another
        self.keys = FleetKeys(host.config.redis_prefix)
        self.extra: Callable[[], dict] = dict  # more for the entry (demand, floors: the fleet planner's)
        self.desired: dict[str, str] = {}  # the last desired state read; kept while Redis is away
        self._held: frozenset[str] = frozenset()  # supervisors the fleet holds paused here
        self._cursor: str | None = None  # the last command seen; None: skip to the newest (start, reconnect)
        self._pubsub: Any = None
        self._pubsub_fd: int | None = None
        self._away = False
        self._beats = 0
        self._conflict_logged = -CONFLICT_LOG_EVERY
        self._subscribe_after = 0  # the beat from which to (re)try subscribing
        self._released: set[str] = set()  # continued by the last reconcile (the fleet let them go)

    # --- start and stop ----------------------------------------------------------------------

    def claim(self) -> None:
        """At start-up: take this node id, unless another live master holds it (FleetConflict),
        and read the desired state, so supervisors start paused when the fleet is paused."""
        if self.host.redis_error is not None:
            return  # the first beat after Redis is back writes the entry
        key = self.keys.node(self.node)
        try:
            with self.host.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, json.dumps(self.entry()), nx=True, px=self._ttl_ms())
                pipe.get(key)
                pipe.hgetall(self.keys.desired)
                pipe.xrevrange(self.keys.commands, count=1)
                taken, current, desired, last = pipe.execute()
        except RedisError as exc:
            self._lost(exc, connection=isinstance(exc, (RedisConnectionError, RedisTimeout)))
            return
        if not taken:
            other = _decode_entry(current)
            if other is not None and not self._mine(other):
                if not self._may_take_over(other):
                    raise FleetConflict(self._conflict_text(other))
                log.warning("fleet node id taken over from a dead master on this host", extra={
                    "event": "fleet_node_taken_over", "node": self.node, "old_pid": other["pid"]})
        self.desired = commands.decode(desired)
        self._cursor = last[0][0].decode() if last else "0-0"

    def leave(self) -> None:
        """A clean stop: remove this node's entry at once (others see it gone, not expired later)."""
        self._drop_pubsub()
        if self.host.redis_error is not None:
            return
        key = self.keys.node(self.node)
        try:
            current = _decode_entry(self.host.redis.get(key))
            if current is not None and self._mine(current):
                with self.host.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(key)
                    pipe.zrem(self.keys.nodes, self.node)
                    pipe.execute()
        except RedisError as exc:
            log.warning("could not remove this node's fleet entry; it expires in 3 heartbeats", extra={
                "event": "fleet_leave_failed", "error": str(exc)})

    def wants_paused(self, name: str) -> bool:
        return fleetview.paused(self.desired, name)

    def held(self) -> frozenset[str]:
        """Supervisors the fleet holds paused here: a local `continue` of them is refused."""
        return self._held

    # --- the operator's side (through the command layer) -----------------------------------

    def nodes(self) -> list[dict]:
        return commands.node_rows(commands.live_entries(self.host.redis, self.keys))

    def view(self) -> dict:
        return commands.view(self.host.redis, self.keys, self.entry())

    def send(self, action: str, supervisor: str | None, processes: int | None) -> dict:
        return commands.send(self.host.redis, self.keys, self.node, set(self.host.supervisors), action, supervisor,
                             processes)

    def confirmations(self, command_id: str) -> dict:
        return commands.confirmations(self.host.redis, self.keys, command_id)

    # --- every heartbeat -----------------------------------------------------------------------

    def beat(self, now: float) -> float:
        """Write the entry, adopt the desired state, run new commands; the time to the next beat."""
        heartbeat = self.host.config.fleet_heartbeat  # a reload may change it
        if self.host.redis_error is not None:
            self._drop_pubsub()
            return heartbeat
        self._beats += 1
        try:
            self._subscribe()
            results = self._exchange()
        except (RedisConnectionError, RedisTimeout) as exc:
            self._lost(exc)
            return heartbeat
        except RedisError as exc:  # junk under our keys (WRONGTYPE ...): said once, retried
            self._lost(exc, connection=False)
            return heartbeat
        if self._away:
            self._away = False
            log.info("fleet duty back: this node's entry is written again", extra={"event": "fleet_available"})
        self._check_conflict(results[0])
        self.desired = commands.decode(results[2])
        if self._cursor is None:
            self._cursor, found = (results[3][0][0].decode() if results[3] else "0-0"), []
        else:
            found = [entry for _, entries in (results[3] or []) for entry in entries]
        self._reconcile()
        self._run_commands(found)
        return heartbeat

    def _exchange(self) -> list:
        wall = time.time()
        with self.host.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.node(self.node), json.dumps(self.entry()), px=self._ttl_ms(), get=True)
            pipe.zadd(self.keys.nodes, {self.node: wall})
            pipe.hgetall(self.keys.desired)
            if self._cursor is None:
                pipe.xrevrange(self.keys.commands, count=1)
            else:
                pipe.xread({self.keys.commands: self._cursor}, count=100)
            if self._beats % PRUNE_EVERY == 1:
                pipe.zremrangebyscore(self.keys.nodes, "-inf", wall - PRUNE_AFTER)
            return pipe.execute()

    def entry(self) -> dict:
        status = self.handle({"cmd": "status"}, "full")["result"]
        fleet_max = {name: getattr(sup.config, "fleet_max_processes", None)
                     for name, sup in self.host.supervisors.items()}
        entry = fleetview.entry(status, node=self.node, host=self.hostname, heartbeat=self.host.config.fleet_heartbeat,
                                now=time.time(), fleet_max=fleet_max, extra=self.extra())
        entry["token"] = self.token
        return entry

    def _reconcile(self) -> None:
        """Pause what the fleet wants paused (a node that starts, reconnects or reloads adopts it);
        continue what it held and released."""
        sups = self.host.supervisors
        want = fleetview.held(self.desired, sups)
        released = self._held - want
        self._held = want
        for name in sorted(want):
            if not sups[name].paused:
                self._local("pause", name)
        self._released = {name for name in released if name in sups and sups[name].paused}
        for name in sorted(self._released):
            self._local("continue", name)

    def _local(self, cmd: str, supervisor: str | None, **args) -> dict:
        reply = self.handle({"cmd": cmd, "args": {"supervisor": supervisor, **args}}, "full")
        if not reply.get("ok"):
            log.warning("a fleet command failed on this node", extra={
                "event": "fleet_command_failed", "cmd": cmd, "supervisor": supervisor, "error": reply.get("error")})
        return reply

    def _run_commands(self, found: list) -> None:
        replies = {}
        for raw_id, raw_fields in found:
            command_id = raw_id.decode()
            self._cursor = command_id
            fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw_fields.items()}
            replies[command_id] = self._run(fields)
            log.info("fleet command", extra={"event": "fleet_command", "id": command_id, "cmd": fields.get("cmd"),
                                             "from": fields.get("from"), "ok": replies[command_id].get("ok")})
        if not replies:
            return
        try:
            with self.host.redis.pipeline(transaction=False) as pipe:  # the entry again: as the commands left it
                pipe.set(self.keys.node(self.node), json.dumps(self.entry()), px=self._ttl_ms())
                for command_id, reply in replies.items():
                    pipe.hset(self.keys.ack(command_id), self.node, json.dumps(reply, default=str))
                    pipe.expire(self.keys.ack(command_id), ACK_TTL)
                pipe.execute()
        except RedisError as exc:
            self._lost(exc, connection=isinstance(exc, (RedisConnectionError, RedisTimeout)))

    def _run(self, fields: dict[str, str]) -> dict:
        """One fleet command on this node, as the command layer's reply."""
        action = fields.get("cmd")
        try:
            args = json.loads(fields.get("args", "{}"))
        except ValueError:
            args = None
        supervisor = args.get("supervisor") if isinstance(args, dict) else None
        if action not in fleetview.ACTIONS or not isinstance(args, dict) or \
                not isinstance(supervisor, (str, type(None))):
            return {"ok": False, "error": f"not a fleet command: {fields!r:.200}"}
        if supervisor is not None and supervisor not in self.host.supervisors:
            return {"ok": True, "result": {"not_here": supervisor}}
        if action == "pause":  # done by _reconcile from the desired state; say what is paused
            return {"ok": True, "result": {"paused": sorted(n for n in self._held if supervisor in (None, n))}}
        if action == "scale":  # a fleet-wide total: the planner's to split; shown as the budget
            return {"ok": True, "result": {"supervisor": supervisor,
                                           "budget": fleetview.budget(self.desired, supervisor)}}
        if action == "terminate":
            return self.handle({"cmd": "terminate"}, "full")
        named = [supervisor] if supervisor else list(self.host.supervisors)
        if action == "continue" and not any(self.host.supervisors[n].paused for n in named):
            return {"ok": True, "result": {"continued": sorted(self._released & set(named))}}
        return self._local(action, supervisor)

    # --- the wake channel --------------------------------------------------------------------

    def _subscribe(self) -> None:
        """Listen on the wake channel; refused (an ACL without the channel), the beats carry on
        alone and commands land within a heartbeat instead of at once (said once, retried)."""
        if self._pubsub is not None or self._beats < self._subscribe_after:
            return
        pubsub = self.host.redis.pubsub()
        try:
            pubsub.subscribe(self.keys.wake)
        except (RedisConnectionError, RedisTimeout):
            pubsub.close()
            raise
        except RedisError as exc:
            pubsub.close()
            if self._subscribe_after == 0:
                log.warning("cannot subscribe to the fleet's wake channel: fleet commands land at the next "
                            "heartbeat", extra={"event": "fleet_wake_refused", "channel": self.keys.wake,
                                                "error": str(exc)})
            self._subscribe_after = self._beats + PRUNE_EVERY
            return
        self._pubsub = pubsub
        self._pubsub_fd = pubsub.connection._sock.fileno()
        self.host.selector.register(self._pubsub_fd, selectors.EVENT_READ, self._on_wake)

    def _on_wake(self) -> None:
        woken = False
        try:
            while (message := self._pubsub.get_message(timeout=0.0)) is not None:
                woken = woken or message.get("type") == "message"
        except Exception as exc:  # the connection broke: resubscribe at the next beat
            log.debug("fleet wake channel lost", extra={"event": "fleet_wake_lost", "error": str(exc)})
            self._drop_pubsub()
            woken = True
        if woken:
            self.wake()

    def _drop_pubsub(self) -> None:
        if self._pubsub_fd is not None:
            try:
                self.host.selector.unregister(self._pubsub_fd)
            except (KeyError, ValueError):
                pass
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception:
                pass
        self._pubsub = self._pubsub_fd = None

    # --- helpers -------------------------------------------------------------------------------

    def _ttl_ms(self) -> int:
        return int(BEATS_TO_EXPIRY * self.host.config.fleet_heartbeat * 1000)

    def _lost(self, exc: Exception, connection: bool = True) -> None:
        """Said once per outage; the master goes on, and one-off commands sent meanwhile are skipped."""
        self._cursor = None
        self._drop_pubsub()
        if connection:
            self.host.redis_failed(exc)
        if not self._away:
            self._away = True
            log.warning("fleet duty paused: Redis unavailable; this master runs on and rejoins when it is back",
                        extra={"event": "fleet_unavailable", "node": self.node,
                               "error": f"{type(exc).__name__}: {exc}"})

    def _mine(self, other: dict) -> bool:
        return other.get("host") == self.hostname and other.get("pid") == os.getpid()

    def _may_take_over(self, other: dict) -> bool:
        """Same host, and the master that wrote it is gone (a crash, then a restart): no process at
        its pid, or one that started at another time (sysutil.start_token), or no horizond there."""
        if other.get("host") != self.hostname:
            return False
        if isinstance(other.get("token"), str):
            return sysutil.start_token(other["pid"]) != other["token"]
        return not _horizond_alive(other["pid"])

    def _conflict_text(self, other: dict) -> str:
        seen = other["last_seen"]
        return (f"fleet node {self.node!r} is already live on this Redis (prefix {self.keys.prefix!r}): "
                f"host {other['host']}, pid {other['pid']}, last seen {max(0.0, time.time() - seen):.1f} s ago "
                f"({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seen))}); give this master another "
                f"[fleet] node, or stop that one (its entry expires 3 heartbeats after it stops)")

    def _check_conflict(self, previous: bytes | None) -> None:
        other = _decode_entry(previous)
        if other is None or self._mine(other) or self._may_take_over(other) or \
                time.monotonic() - self._conflict_logged < CONFLICT_LOG_EVERY:
            return
        self._conflict_logged = time.monotonic()
        log.error("another master writes the same fleet node id", extra={
            "event": "fleet_node_conflict", "node": self.node, "other_host": other["host"],
            "other_pid": other["pid"]})


def _decode_entry(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        return fleetview.parse_entry(json.loads(raw))
    except ValueError:
        return None


def _horizond_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"horizond" in handle.read()
    except OSError:
        return True
