"""Supervisor: keeps one configured supervisor's worker slots filled.

A slot is a place for one worker; it remembers how its workers died so a
crash loop backs off (restarts.py) instead of spinning. Workers being replaced
(reload, recycle, removal) leave their slot and finish their job as "retiring".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from . import restarts
from .config import SupervisorConfig
from .process import WorkerProcess
from .rqworker import EXIT_OK

log = logging.getLogger("horizond.supervisor")

SpawnFn = Callable[[SupervisorConfig, int], WorkerProcess]


@dataclass
class Slot:
    index: int
    process: WorkerProcess | None = None
    health: restarts.SlotHealth = field(default_factory=restarts.SlotHealth)


def describe_exit(status: int) -> tuple[bool, str]:
    """(clean, text) for a wait status: clean means the worker left on purpose."""
    if status < 0:
        return False, "lost (no exit status)"
    import os

    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        return False, f"killed by {signal.Signals(sig).name}"
    code = os.WEXITSTATUS(status)
    return code == EXIT_OK, f"exit code {code}"


class Supervisor:
    def __init__(self, config: SupervisorConfig, spawn: SpawnFn, generation: int = 1):
        self.config = config
        self.spawn = spawn
        self.generation = generation
        self.state = "running"  # running | draining
        self.slots: list[Slot] = []
        self.retiring: list[WorkerProcess] = []

    @property
    def name(self) -> str:
        return self.config.name

    def target(self) -> int:
        """Fixed process count until the balancer lands: the supervisor's floor."""
        return 0 if self.state == "draining" else self.config.min_processes

    def processes(self) -> list[WorkerProcess]:
        return [s.process for s in self.slots if s.process] + self.retiring

    def tick(self, now: float) -> None:
        self._resize(self.target(), now)
        if self.state != "running":
            return
        for slot in self.slots:
            if slot.process is None and slot.health.ready(now):
                slot.process = self.spawn(self.config, self.generation)
                log.info("worker started", extra={"event": "worker_started", "supervisor": self.name,
                                                  "pid": slot.process.pid, "slot": slot.index})
        self._recycle_old(now)

    def _resize(self, target: int, now: float, reason: str = "scale") -> None:
        while len(self.slots) < target:
            self.slots.append(Slot(len(self.slots)))
        while len(self.slots) > target:
            self._retire(self.slots.pop().process, now, reason)

    def _recycle_old(self, now: float) -> None:
        """max_time: a worker past its age leaves after its current job; its slot refills."""
        if not self.config.max_time:
            return
        for slot in self.slots:
            proc = slot.process
            if proc and now - proc.started >= self.config.max_time:
                slot.process = None
                self._retire(proc, now, reason="max_time")

    def _retire(self, proc: WorkerProcess | None, now: float, reason: str = "scale") -> None:
        if proc is None:
            return
        proc.retiring = True
        proc.terminate(now)
        self.retiring.append(proc)
        log.info("worker retiring", extra={"event": "worker_retiring", "supervisor": self.name,
                                           "pid": proc.pid, "reason": reason})

    def owns(self, proc: WorkerProcess) -> bool:
        return proc in self.retiring or any(s.process is proc for s in self.slots)

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
        level = logging.INFO if clean else logging.WARNING
        extra = {"event": "worker_exited", "supervisor": self.name, "pid": proc.pid, "exit": how,
                 "slot": slot.index, "failures": slot.health.failures}
        if slot.health.backing_off:
            extra["event"] = "worker_crash_loop"
            extra["restart_in"] = round(slot.health.not_before - now, 1)
        log.log(level, "worker exited" if clean else "worker died", extra=extra)

    def replace(self, config: SupervisorConfig, now: float) -> None:
        """New settings: every current worker finishes its job and leaves; new ones start now."""
        self.config = config
        self.generation += 1
        for slot in self.slots:
            self._retire(slot.process, now, reason="reload")
            slot.process = None
            slot.health = restarts.SlotHealth()

    def drain(self, now: float, reason: str = "removed") -> None:
        """Stop for good: every worker finishes its job and leaves; no slot refills."""
        self.state = "draining"
        self._resize(0, now, reason)

    @property
    def finished(self) -> bool:
        return self.state == "draining" and not self.processes()

    def status(self, now: float, queue_sizes: dict[str, int | None]) -> dict:
        live = [s.process for s in self.slots if s.process]
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
            "busy": sum(1 for p in live if p.state == "busy"),
            "retiring": len(self.retiring),
            "queues": {q: {"processes": len(live), "size": queue_sizes.get(q)} for q in self.config.queues},
            "workers": [p.snapshot(now) for p in live + self.retiring],
            "backoff": backoff,
        }
