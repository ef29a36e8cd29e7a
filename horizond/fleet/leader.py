"""The leader's beat: plan the fleet budgets, write fenced grants, settle dead nodes' jobs.

Runs on the node holding the lease, right after its member beat. Two round trips: the roster
(HGETALL), then every roster node's demand entry (and, on a takeover, the grants the previous
leader left, which nodes may still act on). A roster node without a demand entry stopped
heartbeating 3 beats ago: its jobs are settled (settle_node, handed in by the master) and a dead
marker is left for it. Then, per budgeted supervisor, core/fleetplan.plan splits the budget, and
all grants go out in one GRANT script call, written only while this leader holds the lease under
its epoch.

What a node may be running (`held`) is what it reports, or the cap of any grant it may still act
on: the one it reports using and every grant issued to it since (a grant is valid for its ttl
after a node reads it, and readable for its ttl after it is written: 2 ttl in all).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from horizond.core import fleetplan
from horizond.fleet import leasekeys as keys
from horizond.fleet.budget import DEAD_MARKER_TTL, BudgetMember

log = logging.getLogger("horizond.fleet")

BURY_AFTER_BEATS = 1.5  # a new leader buries nobody before every live node had a beat to write its entry
SettleFn = Callable[[Redis, dict, str], list[str]]  # (redis, roster entry, cause) -> job ids settled


@dataclass
class Issued:
    token: int
    seq: int
    caps: dict[str, int]
    at: float  # monotonic


@dataclass
class FleetLeader:
    settle_node: SettleFn
    seq: int = 0
    issued: dict[str, list[Issued]] = field(default_factory=dict)
    last_plan_seconds: float = 0.0

    def step(self, redis: Redis, member: BudgetMember, now: float) -> None:
        if not member.leading:
            self.issued = {}
            return
        p = member.prefix
        roster = {_text(k): _json(v) for k, v in redis.hgetall(keys.roster_key(p)).items()}
        nodes = sorted(roster)
        if not nodes:
            return
        with redis.pipeline(transaction=False) as pipe:
            pipe.mget([keys.demand_key(p, n) for n in nodes])
            if member.took_over:
                pipe.mget([keys.grant_key(p, n) for n in nodes])
            replies = pipe.execute()
        entries = dict(zip(nodes, (_json(e) for e in replies[0]), strict=True))
        if member.took_over:
            self._adopt_previous(nodes, replies[1], now)
        settled_in = now - member.leading_since >= BURY_AFTER_BEATS * member.heartbeat
        for node in nodes:  # a new leader first lets every live node beat once (after a Redis outage)
            if entries[node] is None and node != member.ident.node and settled_in:
                self._bury(redis, member, node, roster[node])
        alive = {n: e for n, e in entries.items() if e is not None}
        grants = self.plan(alive, member, now)
        if grants and self._write(redis, member, grants):
            mine = grants.get(member.ident.node)
            if mine is not None:  # the leader's own node need not wait a beat for its grant
                member.take_grant(mine.encode(), now)

    def plan(self, entries: dict[str, dict], member: BudgetMember, now: float) -> dict[str, str]:
        """Grant JSON per node, from the nodes' entries (pure planning in core/fleetplan)."""
        started = time.perf_counter()
        budgets: dict[str, int] = {}
        rows = {node: _rows(entry) for node, entry in entries.items()}
        for node_rows in rows.values():
            for sup, row in node_rows.items():
                budgets[sup] = min(budgets.get(sup, row[4]), row[4])  # nodes disagree: the smallest budget
        self.seq += 1
        token, ttl = member.epoch_seen, member.grant_ttl
        caps: dict[str, dict[str, int]] = {}
        for sup, budget in sorted(budgets.items()):
            needs = {}
            for node, entry in entries.items():
                row = rows[node].get(sup)
                if row is not None:
                    needs[node] = fleetplan.NodeNeed(row[0], row[1], row[2], self._held(node, entry, sup, row[3],
                                                                                       ttl, now))
            for node, cap in fleetplan.plan(budget, needs).items():
                caps.setdefault(node, {})[sup] = cap
        self.last_plan_seconds = time.perf_counter() - started
        out = {}
        for node, node_caps in caps.items():
            self.issued.setdefault(node, []).append(Issued(token, self.seq, node_caps, now))
            out[node] = json.dumps({"token": token, "seq": self.seq, "ttl": ttl, "expires": round(time.time() + ttl, 3),
                                    "caps": node_caps, "leader": member.ident.node})
        return out

    def _held(self, node: str, entry: dict, sup: str, current: int, ttl: float, now: float) -> int:
        """The most `node` may run of `sup`: its processes, or any grant it may still act on."""
        using = _pair(entry.get("grant"))
        recent = [g for g in self.issued.get(node, []) if now - g.at < 2 * ttl and (g.token, g.seq) >= using]
        self.issued[node] = recent
        return max([current, *(g.caps.get(sup, 0) for g in recent)])

    def _adopt_previous(self, nodes: list[str], grants: list, now: float) -> None:
        """A takeover: the previous leader's last grants count as issued now (nodes may hold them)."""
        self.issued = {}
        for node, raw in zip(nodes, grants, strict=True):
            data = _json(raw)
            if data:
                try:
                    caps = {str(k): int(v) for k, v in data["caps"].items()}
                    self.issued[node] = [Issued(int(data["token"]), int(data["seq"]), caps, now)]
                except (KeyError, ValueError, TypeError, AttributeError):
                    continue

    def _write(self, redis: Redis, member: BudgetMember, grants: dict[str, str]) -> bool:
        p = member.prefix
        nodes = sorted(grants)
        written = redis.eval(keys.GRANT, 2 + len(nodes), keys.leader_key(p), keys.epoch_key(p),
                             *[keys.grant_key(p, n) for n in nodes], member.ident.lease_id, member.epoch_seen,
                             max(1, int(member.grant_ttl * 1000)), *[grants[n] for n in nodes])
        if not written:
            log.warning("grants refused: this node no longer holds the lease under its epoch", extra={
                "event": "fleet_grants_fenced", "epoch": member.epoch_seen})
            member.leading = False
        return bool(written)

    def _bury(self, redis: Redis, member: BudgetMember, node: str, ident: dict | None) -> None:
        """A node silent for 3 beats: settle its workers' jobs, leave a marker, drop it from the roster.

        Settled once: the roster entry goes only after the marker is written (a leader dying
        in between leaves the node to its successor, and settling again finds nothing held)."""
        p = member.prefix
        if _json(redis.hget(keys.roster_key(p), node)) != ident:
            return  # it left cleanly (or came back) since the roster was read
        if not ident or not isinstance(ident.get("pid"), int):
            redis.hdel(keys.roster_key(p), node)
            return
        cause = f"its node {node!r} stopped heartbeating (declared dead by the fleet leader)"
        jobs = self.settle_node(redis, ident, cause)
        marker = {"node": node, "host": ident.get("host"), "pid": ident.get("pid"), "start": ident.get("start"),
                  "jobs": jobs, "by": member.ident.node, "token": member.epoch_seen, "declared": round(time.time(), 3)}
        with redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.dead_key(p, node), json.dumps(marker), ex=DEAD_MARKER_TTL)
            pipe.delete(keys.grant_key(p, node))  # its share goes to others: it must not read this one back
            pipe.hdel(keys.roster_key(p), node)
            pipe.execute()
        self.issued.pop(node, None)
        log.warning("fleet node declared dead; its jobs settled", extra={
            "event": "fleet_node_dead", "node": node, "host": ident.get("host"), "pid": ident.get("pid"),
            "jobs": jobs})


def _rows(entry: dict) -> dict[str, list[int]]:
    """A node's [demand, floor, capacity, current, budget] per supervisor; malformed rows are dropped
    (another node's entry is data, not trusted)."""
    sups = entry.get("sups")
    if not isinstance(sups, dict):
        return {}
    return {str(name): row for name, row in sups.items()
            if isinstance(row, list) and len(row) == 5 and all(type(v) is int and v >= 0 for v in row)}


def _pair(value) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        return value[0], value[1]
    return 0, 0


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _json(raw) -> dict | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
