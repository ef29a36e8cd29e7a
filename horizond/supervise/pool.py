"""Pool: the slots serving one queue (or, with balance "off", the whole queue list).

A slot is a place for one worker; it remembers how its workers died so a crash
loop backs off (restarts.py). The pool owns its slots: it grows and shrinks them
to a target and hands back the workers that lose theirs, which the supervisor
retires (they finish their job and still count against the pool until they exit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from horizond.core import restarts
from horizond.supervise.process import WorkerProcess

ALL = "*"  # the pool key when one pool serves every queue (balance = "off")


@dataclass
class Slot:
    index: int
    process: WorkerProcess | None = None
    health: restarts.SlotHealth = field(default_factory=restarts.SlotHealth)


@dataclass
class Pool:
    key: str
    queues: tuple[str, ...]
    target: int = 0
    reason: str = "start: floor"
    slots: list[Slot] = field(default_factory=list)

    def live(self) -> list[WorkerProcess]:
        return [s.process for s in self.slots if s.process]

    def serves(self, proc: WorkerProcess) -> bool:
        """A worker (live or retiring) listening on this pool's queues."""
        return proc.spec.queues == self.queues

    def resize(self, target: int, retiring: int) -> list[WorkerProcess]:
        """Slots follow the target; `retiring` workers of this pool count until they exit.

        Shrinking frees empty slots first, then the oldest idle workers, busy ones
        last (they finish their job): scaling never kills a job. Returns the workers
        whose slot went away.
        """
        want = target - retiring if target > len(self.slots) + retiring else min(len(self.slots), target)
        while len(self.slots) < want:
            self.slots.append(Slot(max((s.index for s in self.slots), default=-1) + 1))
        evicted = []
        if len(self.slots) > want:
            order = sorted(self.slots, key=lambda s: (s.process is not None, s.process is not None and
                                                      s.process.state == "busy", s.process.started if s.process else 0))
            for slot in order[: len(self.slots) - want]:
                self.slots.remove(slot)
                if slot.process is not None:
                    evicted.append(slot.process)
        return evicted

    def empty(self) -> list[WorkerProcess]:
        """Give up every slot (the pool goes away): its workers, to be retired."""
        evicted = self.live()
        self.slots = []
        return evicted

    def replace(self, slot: Slot, fresh_health: bool = False) -> WorkerProcess | None:
        """Free a slot for a new worker (a restart, max_time): the old one, to be retired."""
        proc, slot.process = slot.process, None
        if fresh_health:
            slot.health = restarts.SlotHealth()  # the new generation starts with a clean record
        return proc

    def old(self, generation: int) -> list[Slot]:
        """Slots whose worker runs an older generation (settings or code) than `generation`."""
        return [s for s in self.slots if s.process and s.process.generation != generation]


def split_evenly(total: int, keys: list[str]) -> dict[str, int]:
    base, extra = divmod(total, max(1, len(keys)))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(keys)}
