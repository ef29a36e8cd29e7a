"""This node's side of the fleet lease and budget: one pipelined round trip per heartbeat.

Each beat, in one pipeline: acquire or renew the leader lease (LEASE: SET NX PX, INCR of the
epoch on a takeover), write this node's demand for its budgeted supervisors (PX 3 beats) and its
roster entry (who it is: host, pid, start, job policy: what the leader needs to settle its jobs if
it dies), and read its grant, the fleet's desired state (`scale:{SUP}`) and its dead marker.

The grant is checked here, never trusted blindly: a token below the highest epoch this node has
seen is a stale leader's and ignored (logged `fleet_stale_grant`); a grant is valid for its ttl
from when this node first read it, on this node's monotonic clock (clock skew between hosts does
not matter; a paused process wakes with its grant expired), and only while its key exists.
Supervisors carry the result (`fleet_budgeted`, `fleet_grant`) and clamp their targets in tick().
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from redis import Redis

from horizond.core import fleetplan
from horizond.fleet import leasekeys as keys

log = logging.getLogger("horizond.fleet")

LEASE_BEATS = 3  # the lease: renewed every beat, lost after 3 missed beats
GRANT_BEATS = 2  # a grant's ttl (and its key's PX): one missed leader beat is no expiry
ENTRY_BEATS = 3  # the demand entry's PX: a node silent this long is dead
DEAD_MARKER_TTL = 86_400


@dataclass
class Grant:
    token: int
    seq: int
    caps: dict[str, int]
    until: float  # monotonic: valid while now < until


@dataclass
class Identity:
    node: str
    host: str
    pid: int
    start: str | None

    @property
    def lease_id(self) -> str:
        return f"{self.node}:{self.pid}:{self.start or ''}"


@dataclass
class BudgetMember:
    ident: Identity
    prefix: str
    heartbeat: float
    epoch_seen: int = 0
    leading: bool = False
    took_over: bool = False
    leading_since: float = 0.0  # monotonic: when this node last took the lease
    holder: str = ""
    grant: Grant | None = None
    grant_valid: bool = False
    scaled: dict[str, int] = field(default_factory=dict)  # `scale --fleet` totals from P:fleet:desired
    settled_elsewhere: set[str] = field(default_factory=set)  # jobs the leader settled while we were "dead"
    _stale_logged: tuple[int, int] = (0, 0)

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.heartbeat * LEASE_BEATS * 1000))

    @property
    def grant_ttl(self) -> float:
        return self.heartbeat * GRANT_BEATS

    def budget(self, sup) -> int | None:
        return fleetplan.budget_of(sup.config.fleet_max_processes, self.scaled.get(sup.name))

    # --- the beat --------------------------------------------------------------------

    def beat(self, redis: Redis, sups: list, workers: list, now: float, restart=None) -> None:
        """One round trip: lease, entry, roster, grant, desired state, dead marker."""
        p, node = self.prefix, self.ident.node
        with redis.pipeline(transaction=False) as pipe:
            pipe.eval(keys.LEASE, 2, keys.leader_key(p), keys.epoch_key(p), self.ident.lease_id, self.lease_ms,
                      self.epoch_seen)
            pipe.set(keys.demand_key(p, node), json.dumps(self.entry(sups, now)),
                     px=max(1, int(self.heartbeat * ENTRY_BEATS * 1000)))
            pipe.hset(keys.roster_key(p), node, json.dumps(self.roster(sups)))
            pipe.get(keys.grant_key(p, node))
            pipe.hgetall(keys.desired_key(p))
            pipe.get(keys.dead_key(p, node))
            lease, _, _, grant, desired, dead = pipe.execute()
        self._lease(lease, now)
        self.scaled = _scaled(desired)
        if dead is not None:
            self._declared_dead(redis, dead, workers, now, restart)
        self.take_grant(grant, now)
        self.apply(sups, now)

    def entry(self, sups: list, now: float) -> dict:
        """What the leader plans from: per budgeted supervisor [demand, floor, capacity, current, budget]."""
        out = {}
        for sup in sups:
            budget = self.budget(sup)
            if budget is None:
                continue
            cfg = sup.config
            current = len(sup.processes())
            demand, floor, capacity = fleetplan.supervisor_need(
                {k: p.target for k, p in sup.pools.items()}, sup.fleet_wanted, cfg.min_processes,
                cfg.max_processes, current, sup.memory_ok)
            out[sup.name] = [demand, floor, capacity, current, budget]
        valid = self.grant is not None and self.grant_valid
        return {"node": self.ident.node, "pid": self.ident.pid, "sups": out,
                "grant": [self.grant.token, self.grant.seq] if valid else None}

    def roster(self, sups: list) -> dict:
        """Who this node is, kept after its entry expires: the leader settles its jobs from it."""
        return {"host": self.ident.host, "pid": self.ident.pid, "start": self.ident.start,
                "policy": {s.name: [s.config.tries, list(s.config.backoff)] for s in sups}}

    def _lease(self, reply, now: float) -> None:
        state, epoch, holder = int(reply[0]), int(reply[1]), reply[2]
        self.epoch_seen = max(self.epoch_seen, epoch)
        self.holder = holder.decode() if isinstance(holder, bytes) else str(holder)
        was = self.leading
        self.leading = state in (1, 2)
        self.took_over = state == 2
        if self.took_over:
            self.leading_since = now
            log.warning("this node is the fleet leader now", extra={
                "event": "fleet_leader_elected", "node": self.ident.node, "epoch": epoch})
        elif was and not self.leading:
            log.warning("fleet leadership lost", extra={"event": "fleet_leader_lost", "node": self.ident.node,
                                                        "leader": self.holder})

    def take_grant(self, raw: bytes | None, now: float) -> None:
        """Adopt a newer grant from a current leader; a stale one is ignored (and said once)."""
        grant = _parse_grant(raw)
        if grant is not None:
            token, seq, caps, ttl = grant
            if token < self.epoch_seen:
                if self._stale_logged != (token, seq):
                    self._stale_logged = (token, seq)
                    log.warning("grant from a stale leader ignored", extra={
                        "event": "fleet_stale_grant", "token": token, "epoch": self.epoch_seen})
            elif self.grant is None or (token, seq) > (self.grant.token, self.grant.seq):
                self.epoch_seen = max(self.epoch_seen, token)
                changed = self.grant is None or self.grant.caps != caps
                self.grant = Grant(token, seq, caps, now + min(ttl, self.grant_ttl))
                if changed or not self.grant_valid:
                    log.info("fleet grant", extra={"event": "fleet_grant_received", "token": token, "seq": seq,
                                                   "caps": caps})
                self.grant_valid = True
        if self.grant is not None and (now >= self.grant.until or self.grant.token < self.epoch_seen):
            if self.grant_valid:
                log.warning("fleet grant expired: budgeted supervisors do not grow until a new one",
                            extra={"event": "fleet_grant_expired", "token": self.grant.token,
                                   "caps": self.grant.caps})
            self.grant_valid = False

    def apply(self, sups: list, now: float) -> None:
        """Hand each supervisor its budget state; tick() clamps (core/fleetplan.node_cap)."""
        grant = self.grant if self.grant_valid else None
        for sup in sups:
            sup.fleet_budgeted = self.budget(sup) is not None
            cap = grant.caps.get(sup.name) if grant else None
            sup.fleet_grant = (cap, grant.until) if cap is not None else None

    # --- coming back after being declared dead -------------------------------------------

    def _declared_dead(self, redis: Redis, raw: bytes, workers: list, now: float, restart=None) -> None:
        """The leader declared this node dead and settled its jobs. If that was this very master
        (paused, partitioned), kill every worker still running one of those jobs: they run now
        elsewhere or have failed (each logged `fleet_job_settled_elsewhere`); the others are
        rolled over (`restart`), since the leader forgot their RQ worker records."""
        try:
            marker = json.loads(raw)
            mine = marker.get("pid") == self.ident.pid and marker.get("start") == self.ident.start
            jobs = [str(j) for j in marker.get("jobs", [])]
        except (ValueError, AttributeError, TypeError):
            mine, jobs, marker = False, [], {}
        redis.delete(keys.dead_key(self.prefix, self.ident.node))
        if not mine:
            log.info("a previous master of this node was declared dead; the leader settled its jobs", extra={
                "event": "fleet_previous_declared_dead", "jobs": jobs})
            return
        self.settled_elsewhere.update(jobs)
        log.error("this node was declared dead by the fleet leader; its jobs were settled elsewhere", extra={
            "event": "fleet_declared_dead", "node": self.ident.node, "jobs": jobs, "by": marker.get("by")})
        for proc in workers:
            if proc.state == "busy" and proc.job_id in self.settled_elsewhere:
                log.warning("job settled elsewhere while this node was dead: stopping its copy here", extra={
                    "event": "fleet_job_settled_elsewhere", "job_id": proc.job_id, "pid": proc.pid,
                    "action": "killed"})
                proc.kill_cause = "the fleet leader settled its job while this node was declared dead"
                proc.job_id = None  # settled already: the master only forgets the worker
                proc.kill(now)
        if restart is not None:
            restart()

    def finished_here(self, job_id: str | None) -> None:
        """A worker reports a job done that the leader had settled (it finished while we were away)."""
        if job_id and job_id in self.settled_elsewhere:
            self.settled_elsewhere.discard(job_id)
            log.warning("a job the fleet leader had settled also finished here: it ran twice", extra={
                "event": "fleet_job_settled_elsewhere", "job_id": job_id, "action": "finished"})

    def leave(self, redis: Redis) -> None:
        """A clean exit: release the lease (a successor takes over at its next beat), drop the entry."""
        p, node = self.prefix, self.ident.node
        with redis.pipeline(transaction=False) as pipe:
            pipe.eval(keys.RELEASE, 1, keys.leader_key(p), self.ident.lease_id)
            pipe.delete(keys.demand_key(p, node), keys.grant_key(p, node))
            pipe.hdel(keys.roster_key(p), node)
            pipe.execute()
        if self.leading:
            log.info("fleet leadership released", extra={"event": "fleet_leader_released", "node": node})
        self.leading = False


def _scaled(desired: dict) -> dict[str, int]:
    out = {}
    for field_, value in (desired or {}).items():
        name = field_.decode(errors="replace") if isinstance(field_, bytes) else str(field_)
        if name.startswith("scale:"):
            try:
                out[name.removeprefix("scale:")] = max(0, int(value))
            except ValueError:
                pass  # "auto" or garbage: no fleet total
    return out


def _parse_grant(raw: bytes | None) -> tuple[int, int, dict[str, int], float] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        caps = {str(k): max(0, int(v)) for k, v in data["caps"].items()}
        return int(data["token"]), int(data["seq"]), caps, float(data["ttl"])
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("unreadable fleet grant ignored", extra={"event": "fleet_stale_grant", "grant": raw[:200]})
        return None
