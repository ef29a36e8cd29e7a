"""Queue limits (issue 18): `[limits."PATTERN"] concurrency = N` and `rate = [N, SECONDS]`.

One table is one limit, shared by every queue its pattern matches, over every worker of every
master on the Redis (the counts live there). A queue takes the limit of its exact name, else of
the first pattern (in file order) that matches it. Enforced when a worker is about to start a
job (worker/limiting.py): concurrency through RQ 3's own RateLimit registries, rates through a
sliding window of starts.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QueueLimit:
    pattern: str
    concurrency: int = 0  # jobs running at once; 0: no such limit
    rate: tuple[int, float] | None = None  # (jobs started, per seconds)

    def rate_limit_key(self, prefix: str) -> str:
        """The RQ 3 rate-limit key that carries the concurrency (rq:rl:KEY...)."""
        return f"{prefix}:{self.pattern}"

    def starts_key(self, prefix: str) -> str:
        return f"{prefix}:limit:{self.pattern}:starts"


def limit_for(limits: tuple[QueueLimit, ...], queue: str) -> QueueLimit | None:
    exact = next((lim for lim in limits if lim.pattern == queue), None)
    return exact or next((lim for lim in limits if fnmatch.fnmatchcase(queue, lim.pattern)), None)


def parse_table(check, table: dict) -> tuple[QueueLimit, ...]:
    out = []
    for pattern, raw in table.items():
        where = f'limits."{pattern}"'
        if not isinstance(raw, dict):
            check.add("limits", pattern, f"expected a table [{where}], got {type(raw).__name__}")
            continue
        check.unknown_keys(where, raw, {"concurrency", "rate"})
        concurrency = check.get(where, raw, "concurrency", "int", 0)
        if concurrency is not None and not 0 <= concurrency <= 100_000:
            check.add(where, "concurrency", f"expected jobs at once, 1 to 100000 (0: none), got {concurrency}")
            concurrency = 0
        rate = _rate(check, where, raw.get("rate"))
        if not concurrency and rate is None:
            check.add(where, None, "sets no limit: give concurrency = N and/or rate = [N, SECONDS]")
        out.append(QueueLimit(pattern, concurrency or 0, rate))
    return tuple(out)


def _rate(check, where: str, value: Any) -> tuple[int, float] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or not isinstance(value[0], int) or not 1 <= value[0] <= 1_000_000 or not 0 < value[1] <= 86_400:
        check.add(where, "rate", f"expected [jobs, seconds] like [10, 60]: 1 to 1000000 jobs per 0 to 86400 s, "
                                 f"got {value!r}")
        return None
    return (int(value[0]), float(value[1]))
