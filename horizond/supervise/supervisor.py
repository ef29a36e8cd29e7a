"""Supervisor: one configured supervisor's pools of worker slots (pool.py).

A pool serves one queue (balance "auto"/"simple") or the whole queue list in
priority order (balance "off"); its target comes from the balancer (balancer.py,
pure) or from an operator's `scale`. The supervisor keeps what spans its pools:
the generation and rolling restarts, pause, the pin, balancing, and the workers
leaving their slot (scale down, restart, reload, recycle, removal), which finish
their job as "retiring" and still count against their pool until they exit.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from horizond.core import balancer, fleetplan, restarts
from horizond.core.config import SupervisorConfig, is_pattern
from horizond.supervise.pool import ALL, Pool, Slot, split_evenly
from horizond.supervise.process import WorkerProcess
from horizond.worker.rqworker import EXIT_OK, EXIT_REDIS

log = logging.getLogger("horizond.supervisor")

SpawnFn = Callable[[SupervisorConfig, int, bool, tuple[str, ...]], WorkerProcess]
ROLL_FRACTION = 0.25  # at most this share of a supervisor is being replaced at once


@dataclass(frozen=True)
class LatencyFacts:
    """Per queue, what the "latency" strategy adds to a balancing step (the scaler gathers it)."""

    ages: dict[str, float] = field(default_factory=dict)  # the oldest pending job's age, seconds
    rates: dict[str, float] = field(default_factory=dict)  # arrivals, jobs/s
    max_latency: dict[str, float | None] = field(default_factory=dict)  # the queue's [slo] max_latency

    def pool(self, queues: tuple[str, ...]) -> dict:
        """A pool's fields: its oldest job, all its arrivals, its tightest level."""
        levels = [self.max_latency[q] for q in queues if self.max_latency.get(q) is not None]
        return {"oldest_age": max((self.ages.get(q, 0.0) for q in queues), default=0.0),
                "arrival_rate": sum(self.rates.get(q, 0.0) for q in queues),
                "max_latency": min(levels) if levels else None}


def describe_exit(status: int) -> tuple[bool, str]:
    """(clean, text) for a wait status: clean means the worker left on purpose."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:  # real-time signals have no name
            name = f"signal {number}"
        return False, f"killed by {name}"
    code = os.WEXITSTATUS(status)
    if code == EXIT_REDIS:
        return True, f"exit code {code} (Redis went away)"
    return code == EXIT_OK, f"exit code {code}"


class Supervisor:
    def __init__(self, config: SupervisorConfig, spawn: SpawnFn, paused: bool = False):
        self.config = config
        self.spawn = spawn
        self.generation = 1
        self.draining = False
        self.paused = paused
        self.pinned: int | None = None  # `horizonctl scale NAME N` overrides balancing
        self.pools: dict[str, Pool] = {}
        self.retiring: list[WorkerProcess] = []
        self.last_balance = -math.inf
        self.memory_ok = True
        # the fleet budget (fleet/budget.py sets these each heartbeat): budgeted supervisors run at
        # most their grant's cap while it is valid (cap, monotonic end), and never grow without one
        self.fleet_budgeted = config.fleet_max_processes is not None
        self.fleet_grant: tuple[int, float] | None = None
        self.fleet_wanted: int | None = None  # what the balancer wants in all (its demand, for the leader)
        self.set_queues(tuple(q for q in config.queues if not is_pattern(q)))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> str:
        return "draining" if self.draining else "paused" if self.paused else "running"

    def target(self) -> int:
        return sum(p.target for p in self.pools.values())

    def slots(self) -> list[Slot]:
        return [s for p in self.pools.values() for s in p.slots]

    def live(self) -> list[WorkerProcess]:
        return [s.process for s in self.slots() if s.process]

    def processes(self) -> list[WorkerProcess]:
        return self.live() + self.retiring

    def owns(self, proc: WorkerProcess) -> bool:
        return proc in self.retiring or any(s.process is proc for s in self.slots())

    def settled(self, registered: bool = True) -> bool:
        """Every slot has a worker, registered in Redis unless `registered` is False (Redis is away
        and the workers wait for it), or has failed trying (READY must not wait forever)."""
        return all((s.process is not None and (not registered or s.process.state != "starting"))
                   or s.health.failures for s in self.slots())

    # --- pools and balancing ---------------------------------------------------------

    def set_queues(self, names: tuple[str, ...], now: float = 0.0) -> None:
        """Pools follow the queue list, which grows and shrinks as patterns match queues."""
        layout = {ALL: names} if self.config.balance == "off" else {q: (q,) for q in names}
        for key in [k for k in self.pools if k not in layout]:
            for proc in self.pools.pop(key).empty():
                self._retire(proc, now, "queue gone")
        floors = balancer.pool_floors(len(layout), self.config.min_processes, self.config.max_processes)
        for (key, queues), floor in zip(layout.items(), floors, strict=True):
            pool = self.pools.get(key)
            if pool is None:
                self.pools[key] = Pool(key, queues, target=floor)
            elif pool.queues != queues:  # balance "off": the one pool's queue list changed
                pool.queues = queues
                self.generation += 1  # its workers listen on the old list: roll them over
        self.pools = {k: self.pools[k] for k in layout}  # keep priority order

    def balance_due(self, now: float) -> bool:
        return not (self.draining or self.paused) and now - self.last_balance >= self.config.balance_cooldown

    def rebalance(self, pending: dict[str, int], runtimes: dict[str, float], memory_ok: bool, now: float,
                  latency: LatencyFacts | None = None) -> None:
        """One balancing step from fresh queue lengths and measured runtimes (and, for the
        "latency" strategy, the queues' ages, arrival rates and levels)."""
        self.last_balance = now
        self.memory_ok = memory_ok
        if self.pinned is not None:
            return self._apply_pin()
        stats = {}
        for key, pool in self.pools.items():
            mine = pool.live() + [p for p in self.retiring if pool.serves(p)]
            known = [runtimes[q] for q in pool.queues if q in runtimes]
            busy = [p for p in mine if p.state == "busy"]
            stats[key] = balancer.PoolStats(
                pending=sum(pending.get(q, 0) for q in pool.queues),
                runtime=sum(known) / len(known) if known else None,
                busy=len(busy), current=len(mine),
                running_for=tuple(now - p.job_started for p in busy if p.job_started is not None),
                **(latency.pool(pool.queues) if latency is not None and self.config.auto_scaling_strategy == "latency"
                   else {}))
        cfg = self.config
        decision = balancer.balance(stats, balancer.Options(
            cfg.balance, cfg.auto_scaling_strategy, cfg.min_processes, cfg.max_processes, cfg.balance_max_shift,
            memory_ok=memory_ok, cooldown=cfg.balance_cooldown))
        targets = balancer.capped(decision.targets, cfg.min_processes, cfg.max_processes)
        self.fleet_wanted = sum(decision.desired.values()) if decision.desired else None
        for key, pool in self.pools.items():
            if targets[key] != decision.targets[key]:
                decision.reasons[key] += f" (capped at max_processes {cfg.max_processes} -> {targets[key]})"
            decision.targets[key] = targets[key]
            if decision.targets[key] != pool.target:
                log.info("scaled", extra={"event": "scaled", "supervisor": self.name, "pool": key,
                                          "from": pool.target, "to": decision.targets[key],
                                          "reason": decision.reasons[key]})
            pool.target, pool.reason = decision.targets[key], decision.reasons[key]

    def pin(self, processes: int | None) -> None:
        """`horizonctl scale`: hold the supervisor at `processes` (split evenly over its pools),
        or (None) hand it back to the balancer, which looks again at its next step."""
        self.pinned = processes
        if processes is None:
            self.last_balance = -math.inf
        else:
            self._apply_pin()

    def _apply_pin(self) -> None:
        self.fleet_wanted = self.pinned
        for key, count in split_evenly(self.pinned, list(self.pools)).items():
            self.pools[key].target = count
            self.pools[key].reason = f"pinned at {self.pinned} by horizonctl scale"

    # --- the loop's step ---------------------------------------------------------------

    def fleet_cap(self, now: float) -> int | None:
        """The most processes this node may run of this supervisor now (None: no fleet budget)."""
        if not self.fleet_budgeted:
            return None
        grant = self.fleet_grant
        return fleetplan.node_cap(self.fleet_budgeted, grant[0] if grant else None,
                                  grant is not None and now < grant[1], len(self.processes()))

    def tick(self, now: float) -> None:
        cap = self.fleet_cap(now)
        allowed = fleetplan.clamp_pools({k: p.target for k, p in self.pools.items()}, cap, self.config.min_processes)
        for key, pool in self.pools.items():
            self._resize(pool, 0 if self.draining else allowed[key], now)
        if self.draining:
            return
        self._roll(now)
        self._recycle_old(now)
        running = len(self.processes())
        for pool in self.pools.values():
            for slot in pool.slots:
                if slot.process is None and slot.health.ready(now):
                    if cap is not None and running >= cap:
                        return  # a fleet budget counts retiring workers too: a roll waits for them
                    self._start(pool, slot, now)
                    running += 1

    def _start(self, pool: Pool, slot: Slot, now: float) -> None:
        try:
            slot.process = self.spawn(self.config, self.generation, self.paused, pool.queues)
        except OSError as exc:  # out of fds or processes: back off like a crash, never take the master down
            slot.health = restarts.after_exit(slot.health, failed=True, lived=0.0, now=now, how=f"fork failed: {exc}")
            log.error("cannot start a worker", extra={"event": "spawn_failed", "supervisor": self.name,
                                                      "slot": slot.index, "error": str(exc)})
            return
        log.info("worker started", extra={"event": "worker_started", "supervisor": self.name,
                                          "pid": slot.process.pid, "slot": slot.index, "queues": list(pool.queues)})

    def _resize(self, pool: Pool, target: int, now: float) -> None:
        retiring = sum(1 for p in self.retiring if pool.serves(p))
        for proc in pool.resize(target, retiring):
            self._retire(proc, now, "scale down" if not self.draining else "stop")

    def _roll(self, now: float) -> None:
        """Replace old-generation workers a batch at a time, idle ones first.

        A batch counts both old workers still finishing a job and new ones still
        starting, so capacity never drops by more than the batch.
        """
        slots = self.slots()
        old = [(pool, slot) for pool in self.pools.values() for slot in pool.old(self.generation)]
        if not old or any(s.process is None and s.health.failures for s in slots):
            return  # done, or the new workers fail to start: keep the old ones serving
        in_flight = sum(1 for p in self.retiring if p.generation != self.generation)
        in_flight += sum(1 for p in self.live() if p.generation == self.generation and p.state == "starting")
        room = max(1, math.ceil(len(slots) * ROLL_FRACTION)) - in_flight
        for pool, slot in sorted(old, key=lambda ps: ps[1].process.state == "busy")[:max(0, room)]:
            self._retire(pool.replace(slot, fresh_health=True), now, "restart")

    def _recycle_old(self, now: float) -> None:
        """max_time: a worker past its age leaves after its current job; its slot refills."""
        if not self.config.max_time:
            return
        for pool in self.pools.values():
            for slot in pool.slots:
                if slot.process and now - slot.process.started >= self.config.max_time:
                    self._retire(pool.replace(slot), now, reason="max_time")

    def _retire(self, proc: WorkerProcess | None, now: float, reason: str) -> None:
        if proc is None:
            return
        proc.terminate(now)
        self.retiring.append(proc)
        log.info("worker retiring", extra={"event": "worker_retiring", "supervisor": self.name,
                                           "pid": proc.pid, "reason": reason})

    def on_exit(self, proc: WorkerProcess, status: int, now: float) -> None:
        clean, how = describe_exit(status)
        if proc in self.retiring:
            self.retiring.remove(proc)
            log.info("worker stopped", extra={"event": "worker_stopped", "supervisor": self.name,
                                              "pid": proc.pid, "exit": how})
            return
        slot = next(s for s in self.slots() if s.process is proc)
        slot.process = None
        slot.health = restarts.after_exit(slot.health, failed=not clean, lived=now - proc.started, now=now, how=how,
                                          worked=proc.jobs_done > 0)
        extra = {"event": "worker_exited", "supervisor": self.name, "pid": proc.pid, "exit": how,
                 "slot": slot.index, "failures": slot.health.failures}
        if slot.health.backing_off:
            extra["event"] = "worker_crash_loop"
            extra["restart_in"] = round(slot.health.not_before - now, 1)
        log.log(logging.INFO if clean else logging.WARNING, "worker exited" if clean else "worker died", extra=extra)

    # --- operator and reload actions ---------------------------------------------------

    def replace(self, config: SupervisorConfig, now: float) -> None:
        """New settings or new code: roll every worker over, none killed mid-job."""
        layout_changed = config.balance != self.config.balance and "off" in (config.balance, self.config.balance)
        self.config = config
        self.fleet_budgeted = self.fleet_budgeted or config.fleet_max_processes is not None
        self.generation += 1
        self.last_balance = -math.inf
        if layout_changed:  # one pool <-> a pool per queue: rebuild the pools
            old = [q for pool in self.pools.values() for q in pool.queues]
            for pool in self.pools.values():
                for proc in pool.empty():
                    self._retire(proc, now, "reload")
            self.pools = {}
            self.set_queues(tuple(dict.fromkeys(old)), now)
        self._fit_targets()

    def _fit_targets(self) -> None:
        """After new settings: at least the new floors, at most the new cap (largest pools give way)."""
        if self.pinned is not None:
            return self._apply_pin()
        floors = balancer.pool_floors(len(self.pools), self.config.min_processes, self.config.max_processes)
        for pool, floor in zip(self.pools.values(), floors, strict=True):
            pool.target = max(pool.target, floor)
        for key, target in balancer.capped({k: p.target for k, p in self.pools.items()}, self.config.min_processes,
                                           self.config.max_processes).items():
            self.pools[key].target = target

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        for proc in self.live():
            proc.link.send(cmd="pause" if paused else "continue")

    def awaiting_pause(self) -> list[WorkerProcess]:
        """Idle workers told to pause that have not said so yet: maybe blocked in Redis."""
        return [p for p in self.live() if p.state == "idle"] if self.paused else []

    def drain(self, now: float, reason: str = "removed") -> None:
        """Stop for good: every worker finishes its job and leaves; no slot refills."""
        self.draining = True
        for pool in self.pools.values():
            self._resize(pool, 0, now)


