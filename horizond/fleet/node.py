"""The master's "fleet_leader" duty: this node's beat, then the leader's work if it leads.

The master calls step() every heartbeat (supervise/masterduties.py) through its RedisHealth, so a
connection error marks Redis away and the duty waits for it like the others. Any other error (a
script refused, a bug, another node's garbage) is logged once per kind and the master lives on:
budgeted supervisors then keep what they run (their grant expires) and nothing else changes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond import sysutil
from horizond.fleet.budget import BudgetMember, Identity
from horizond.fleet.leader import FleetLeader, SettleFn

log = logging.getLogger("horizond.fleet")


class Fleet:
    def __init__(self, node: str | None, prefix: str, heartbeat: float, pid: int, settle_node: SettleFn,
                 restart: Callable[[], object] | None = None):
        host = sysutil.hostname()
        ident = Identity(node or socket.gethostname(), host, pid, sysutil.start_token(pid))
        self.member = BudgetMember(ident, prefix, heartbeat)
        self.leader = FleetLeader(settle_node)
        self._failed: str | None = None
        self._restart = restart  # rolls every worker over: after this node was declared dead

    @property
    def heartbeat(self) -> float:
        return self.member.heartbeat

    def configure(self, node: str | None, prefix: str, heartbeat: float) -> None:
        """A reload may change the heartbeat (node and prefix need a restart: they name keys)."""
        self.member.heartbeat = heartbeat

    def step(self, redis: Redis, sups: list, workers: list, now: float) -> None:
        try:
            self.member.beat(redis, sups, workers, now, self._restart)
            self.leader.step(redis, self.member, now)
            self.member.apply(sups, now)
        except (RedisConnectionError, RedisTimeout):
            raise  # RedisHealth marks Redis away; the master probes for its return
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            if what != self._failed:
                log.error("fleet step failed; budgeted supervisors hold what they run", extra={
                    "event": "fleet_step_failed", "error": what[:500]})
            self._failed = what
            self.member.apply(sups, now)
        else:
            if self._failed is not None:
                log.info("fleet step works again", extra={"event": "fleet_step_ok"})
            self._failed = None

    def leave(self, redis: Redis) -> None:
        """On a clean exit: release the lease and the entry (never raises)."""
        try:
            self.member.leave(redis)
        except Exception as exc:
            log.warning("could not leave the fleet cleanly; the lease expires by itself", extra={
                "event": "fleet_leave_failed", "error": str(exc)})
