"""Duties: the master loop's periodic work, each run when it falls due.

The loop used to re-run everything on every wakeup, and a busy worker wakes it
twice per job. Now each duty states when it next wants to run (its period, or
a nearer deadline its run returns: a slot's back-off end, the watchdog, a stop
deadline); the loop runs what is due and sleeps until the nearest deadline. An
event (a worker message, a child exit, a command, a signal) wakes only the
duties that care about it, so a finished job costs its metrics and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

RunFn = Callable[[float], "float | None"]


@dataclass
class Duty:
    name: str
    period: float
    run: RunFn  # returns seconds until it wants to run again (None: its period)
    next_due: float = -math.inf  # due at the first turn
    runs: int = 0


class Duties:
    def __init__(self):
        self._duties: dict[str, Duty] = {}

    def add(self, name: str, period: float, run: RunFn) -> None:
        if name in self._duties:
            raise ValueError(f"duty {name!r} added twice")
        self._duties[name] = Duty(name, period, run)

    def __getitem__(self, name: str) -> Duty:
        return self._duties[name]

    def wake(self, *names: str) -> None:
        """Due at once: the loop runs them in its next turn (before it sleeps)."""
        for name in names:
            self._duties[name].next_due = -math.inf

    def due_by(self, name: str, when: float) -> None:
        """Due no later than `when` (a deadline learnt outside the duty, e.g. a Redis error)."""
        duty = self._duties[name]
        duty.next_due = min(duty.next_due, when)

    def wake_all(self) -> None:
        self.wake(*self._duties)

    def due(self, now: float) -> list[str]:
        return [d.name for d in self._duties.values() if d.next_due <= now]

    def run_due(self, now: float) -> None:
        """Run each due duty once, in the order they were added; each sets its next deadline.

        A duty woken by another one in this pass runs in the next turn (the loop does not sleep then)."""
        for duty in list(self._duties.values()):
            if duty.next_due > now:
                continue
            duty.next_due = math.inf  # a duty that wakes itself while running is due again
            after = None
            try:
                after = duty.run(now)
            finally:
                after = duty.period if after is None else max(0.0, min(after, duty.period))
                duty.runs += 1
                if duty.next_due == math.inf:
                    duty.next_due = now + after
                # else: woken while it ran (by itself or another step): stays due

    def next_deadline(self) -> float:
        return min((d.next_due for d in self._duties.values()), default=math.inf)

    def time_to_next(self, now: float, floor: float = 0.0) -> float:
        """The select timeout: time to the nearest deadline (0 when something is due)."""
        return max(floor, self.next_deadline() - now)
