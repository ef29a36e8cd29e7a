"""Circuit breakers (issue 18): `[breakers.NAME]` and what their states mean for the workers.

A breaker counts the failures of jobs from its queues (optionally only some exception classes)
within a window. At `failures` it opens: its queues are paused fleet-wide (no worker starts their
jobs; they wait, spending no tries). After `cooldown` it is half-open: one probe job may start; its
success closes the breaker, its failure opens it again with the cooldown doubled, up to
`max_cooldown`. The state lives in Redis (observe/breakers.py); here: the table, which breakers
cover a queue, whether an exception counts, and which queues the workers must leave alone.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
LEVEL = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # /metrics: horizon_breaker_state


@dataclass(frozen=True)
class Breaker:
    name: str
    queues: tuple[str, ...]  # names or fnmatch patterns
    failures: int
    window: float = 60.0
    cooldown: float = 30.0
    max_cooldown: float = 480.0
    exceptions: tuple[str, ...] = ()  # class names (short or dotted); empty: every exception counts

    def covers(self, queue: str) -> bool:
        return any(queue == q or fnmatch.fnmatchcase(queue, q) for q in self.queues)

    def counts(self, exc_names: tuple[str, ...]) -> bool:
        """Whether a failure counts: `exc_names` are the exception's classes, short and dotted,
        its bases included (so `exceptions = ["ConnectionError"]` counts its subclasses)."""
        return not self.exceptions or any(name in exc_names for name in self.exceptions)


def covering(breakers: tuple[Breaker, ...], queue: str) -> tuple[Breaker, ...]:
    return tuple(b for b in breakers if b.covers(queue))


def held_queues(breakers: tuple[Breaker, ...], states: dict[str, dict], queues: tuple[str, ...]) -> frozenset[str]:
    """The queues no worker may take a job from now: those of an open breaker, and of a
    half-open one whose probe is already running."""
    held = set()
    for b in breakers:
        state = states.get(b.name) or {}
        if state.get("state") == OPEN or (state.get("state") == HALF_OPEN and state.get("probe")):
            held.update(q for q in queues if b.covers(q))
    return frozenset(held)


def parse_table(check, table: dict) -> tuple[Breaker, ...]:
    out = []
    for name, raw in table.items():
        where = f"breakers.{name}"
        if not isinstance(raw, dict):
            check.add("breakers", name, f"expected a table [{where}], got {type(raw).__name__}")
            continue
        check.unknown_keys(where, raw, {"queues", "failures", "window", "cooldown", "max_cooldown", "exceptions"})
        queues = check.get(where, raw, "queues", "strs", ())
        if not queues:
            check.add(where, "queues", "missing: the queues (names or patterns) whose failures it counts")
        failures = check.get(where, raw, "failures", "int", None)
        if failures is None or not 1 <= failures <= 1_000_000:
            check.add(where, "failures", f"expected failures that open it, 1 to 1000000, got {failures!r}")
            failures = 1
        seconds = {}
        bounds = (("window", 60.0, 86_400), ("cooldown", 30.0, 86_400), ("max_cooldown", None, 604_800))
        for key, default, high in bounds:
            value = check.get(where, raw, key, "number", default)
            if value is not None and not 0 < value <= high:
                check.add(where, key, f"expected seconds > 0 (up to {high}), got {value!r}")
                value = default
            seconds[key] = value
        cooldown = seconds["cooldown"] or 30.0
        cap = seconds["max_cooldown"] if seconds["max_cooldown"] is not None else 16 * cooldown
        if cap < cooldown:
            check.add(where, "max_cooldown", f"expected at least cooldown ({cooldown:g} s), got {cap:g}")
            cap = cooldown
        exceptions = check.get(where, raw, "exceptions", "strs", ())
        out.append(Breaker(name, tuple(queues or ()), failures, float(seconds["window"] or 60.0), float(cooldown),
                           float(cap), tuple(exceptions or ())))
    return tuple(out)
