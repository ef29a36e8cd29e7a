"""Supervisor: keeps one configured supervisor's worker slots filled.

A slot is a place for one worker; it remembers how its workers died so a crash
loop backs off (restarts.py) instead of spinning. Workers leaving their slot
(restart, reload, recycle, scale-down, removal) finish their job as "retiring".
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from . import restarts
from .config import SupervisorConfig
from .process import WorkerProcess
from .rqworker import EXIT_OK

log = logging.getLogger("horizond.supervisor")

SpawnFn = Callable[[SupervisorConfig, int, bool], WorkerProcess]
ROLL_FRACTION = 0.25  # at most this share of a supervisor is being replaced at once


@dataclass
class Slot:
    index: int
    process: WorkerProcess | None = None
    health: restarts.SlotHealth = field(default_factory=restarts.SlotHealth)


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
    return code == EXIT_OK, f"exit code {code}"


class Supervisor:
    def __init__(self, config: SupervisorConfig, spawn: SpawnFn, paused: bool = False):
        self.config = config
        self.spawn = spawn
        self.generation = 1
        self.draining = False
        self.paused = paused
        self.pinned: int | None = None  # `horizonctl scale NAME N` overrides balancing
        self.slots: list[Slot] = []
        self.retiring: list[WorkerProcess] = []

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> str:
        return "draining" if self.draining else "paused" if self.paused else "running"

    def target(self) -> int:
        """Process count: pinned by an operator, else the floor (balancing comes later)."""
        if self.draining:
            return 0
        return self.pinned if self.pinned is not None else self.config.min_processes

    def settled(self) -> bool:
        """Every slot has a registered worker, or has failed trying (READY must not wait forever)."""
        return all((s.process is not None and s.process.state != "starting") or s.health.failures
                   for s in self.slots)

    def live(self) -> list[WorkerProcess]:
        return [s.process for s in self.slots if s.process]

    def processes(self) -> list[WorkerProcess]:
        return self.live() + self.retiring

    def owns(self, proc: WorkerProcess) -> bool:
        return proc in self.retiring or any(s.process is proc for s in self.slots)

    # --- the loop's step ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._resize(self.target(), now)
        if self.draining:
            return
        self._roll(now)
        self._recycle_old(now)
        for slot in self.slots:
            if slot.process is None and slot.health.ready(now):
                self._start(slot, now)

    def _start(self, slot: Slot, now: float) -> None:
        try:
            slot.process = self.spawn(self.config, self.generation, self.paused)
        except OSError as exc:  # out of fds or processes: back off like a crash, never take the master down
            slot.health = restarts.after_exit(slot.health, failed=True, lived=0.0, now=now, how=f"fork failed: {exc}")
            log.error("cannot start a worker", extra={"event": "spawn_failed", "supervisor": self.name,
                                                      "slot": slot.index, "error": str(exc)})
            return
        log.info("worker started", extra={"event": "worker_started", "supervisor": self.name,
                                          "pid": slot.process.pid, "slot": slot.index})

    def _resize(self, target: int, now: float, reason: str = "scale") -> None:
        while len(self.slots) < target:
            self.slots.append(Slot(len(self.slots)))
        while len(self.slots) > target:
            self._retire(self.slots.pop().process, now, reason)

    def _roll(self, now: float) -> None:
        """Replace old-generation workers a batch at a time, idle ones first.

        A batch counts both old workers still finishing a job and new ones still
        starting, so capacity never drops by more than the batch.
        """
        old = [s for s in self.slots if s.process and s.process.generation != self.generation]
        if not old or any(s.process is None and s.health.failures for s in self.slots):
            return  # done, or the new workers fail to start: keep the old ones serving
        in_flight = sum(1 for p in self.retiring if p.generation != self.generation)
        in_flight += sum(1 for p in self.live() if p.generation == self.generation and p.state == "starting")
        room = max(1, math.ceil(len(self.slots) * ROLL_FRACTION)) - in_flight
        for slot in sorted(old, key=lambda s: s.process.state == "busy")[:max(0, room)]:
            proc, slot.process = slot.process, None
            slot.health = restarts.SlotHealth()
            self._retire(proc, now, "restart")

    def _recycle_old(self, now: float) -> None:
        """max_time: a worker past its age leaves after its current job; its slot refills."""
        if not self.config.max_time:
            return
        for slot in self.slots:
            proc = slot.process
            if proc and now - proc.started >= self.config.max_time:
                slot.process = None
                self._retire(proc, now, reason="max_time")

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
        slot = next(s for s in self.slots if s.process is proc)
        slot.process = None
        slot.health = restarts.after_exit(slot.health, failed=not clean, lived=now - proc.started, now=now, how=how)
        extra = {"event": "worker_exited", "supervisor": self.name, "pid": proc.pid, "exit": how,
                 "slot": slot.index, "failures": slot.health.failures}
        if slot.health.backing_off:
            extra["event"] = "worker_crash_loop"
            extra["restart_in"] = round(slot.health.not_before - now, 1)
        log.log(logging.INFO if clean else logging.WARNING, "worker exited" if clean else "worker died", extra=extra)

    # --- operator and reload actions ---------------------------------------------------

    def replace(self, config: SupervisorConfig) -> None:
        """New settings or new code: roll every worker over, none killed mid-job."""
        self.config = config
        self.generation += 1

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        for proc in self.live():
            proc.reader.tell(cmd="pause" if paused else "continue")

    def awaiting_pause(self) -> list[WorkerProcess]:
        """Idle workers told to pause that have not said so yet: maybe blocked in Redis."""
        return [p for p in self.live() if p.state == "idle"] if self.paused else []

    def drain(self, now: float, reason: str = "removed") -> None:
        """Stop for good: every worker finishes its job and leaves; no slot refills."""
        self.draining = True
        self._resize(0, now, reason)

    def status(self, now: float, queue_sizes: dict[str, int | None]) -> dict:
        live = self.live()
        backoff = [
            {"slot": s.index, "failures": s.health.failures, "last_exit": s.health.last_exit,
             "restart_in": round(max(0.0, s.health.not_before - now), 1)}
            for s in self.slots if s.process is None and s.health.backing_off
        ]
        return {
            "name": self.name,
            "state": self.state,
            "processes": len(live),
            "target": self.target(),
            "pinned": self.pinned,
            "busy": sum(1 for p in live if p.state == "busy"),
            "retiring": len(self.retiring),
            "queues": {q: {"processes": len(live), "size": queue_sizes.get(q)} for q in self.config.queues},
            "workers": [p.snapshot(now) for p in live + self.retiring],
            "backoff": backoff,
        }
