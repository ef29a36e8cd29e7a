"""Service levels per queue (issue 19): `[slo."QUEUE-OR-PATTERN"]` and what the window says.

A job meets its queue's level when it succeeds and finishes within `max_latency` seconds
of being enqueued; the queue meets its level while at least `success_rate` percent of the
jobs that finished in the last `window` seconds did. That gives one error budget per queue,
(1 - success_rate) of its jobs, spent by every failed or late job, and burn rates in the
style of Google's SRE workbook: how many times faster than "exactly used up at the window's
end" the budget goes, over a fast and a slow pair of windows (each a long window confirmed
by a short one, so an alert ends soon after the burning does).

The window is cut into at most SLICES slices (one minute each for windows up to an hour);
each slice holds counts and a latency histogram (core/sketch.py), so memory is bounded by
queues x slices x buckets, never by jobs. Pure: slices and clocks are passed in.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from horizond.core import sketch
from horizond.core.configcheck import plain

SLICES = 60
MIN_SLICE = 60  # seconds
WINDOW_BOUNDS = (300, 2_592_000)  # 5 minutes to 30 days
DEFAULT_WINDOW = 3600
QUANTILES = (0.5, 0.95, 0.99)
# (name, long window, short window as fractions of the SLO window, burn rate that alerts)
BURN_ALERTS = (("fast", 1 / 12, 1 / 60, 6.0), ("slow", 1 / 4, 1 / 24, 2.0))
KEYS = {"throughput", "max_latency", "success_rate", "window"}


@dataclass(frozen=True)
class SloTarget:
    pattern: str
    throughput: float  # jobs per minute the queue must sustain
    max_latency: float  # seconds from enqueue to finish
    success_rate: float  # percent
    window: int = DEFAULT_WINDOW  # seconds

    @property
    def objective(self) -> float:
        return self.success_rate / 100

    @property
    def slice_seconds(self) -> int:
        return slice_seconds(self.window)


def slice_seconds(window: int) -> int:
    """Whole minutes, so that every master cuts the same window into the same slices."""
    return max(MIN_SLICE, math.ceil(window / SLICES / MIN_SLICE) * MIN_SLICE)


def slice_start(window: int, epoch: float) -> int:
    length = slice_seconds(window)
    return int(epoch // length) * length


def window_starts(window: int, epoch: float) -> list[int]:
    """The slices the window covers, oldest first; the last one is still filling."""
    length = slice_seconds(window)
    count = math.ceil(window / length)
    last = slice_start(window, epoch)
    return [last - length * i for i in range(count - 1, -1, -1)]


def slo_for(slos: tuple[SloTarget, ...], queue: str) -> SloTarget | None:
    """The exact name's level, else the first pattern (in file order) that matches."""
    exact = next((s for s in slos if s.pattern == queue), None)
    return exact or next((s for s in slos if fnmatch.fnmatchcase(queue, s.pattern)), None)


# --- config ----------------------------------------------------------------------------------

def parse_table(check, table: Mapping[str, Any]) -> tuple[SloTarget, ...]:
    out = []
    for pattern, raw in table.items():
        where = f'slo."{pattern}"'
        if not isinstance(raw, dict):
            check.add("slo", pattern, f"expected a table [{where}], got {type(raw).__name__}")
            continue
        if not pattern.strip():
            check.add("slo", pattern, "expected a queue name or pattern, got an empty string")
            continue
        check.unknown_keys(where, raw, KEYS)
        missing = [k for k in ("throughput", "max_latency", "success_rate") if k not in raw]
        for key in missing:
            check.add(where, key, "missing: a service level needs throughput, max_latency and success_rate")
        values = {
            "throughput": _ranged(check, where, raw, "throughput", 0, 10_000_000, "jobs per minute", True),
            "max_latency": _ranged(check, where, raw, "max_latency", 0, 2_592_000, "seconds", False),
            "success_rate": _ranged(check, where, raw, "success_rate", 0, 100, "percent", False, high_open=True),
            "window": _window(check, where, raw),
        }
        if not missing and None not in values.values():
            out.append(SloTarget(pattern, **values))
    return tuple(out)


def _ranged(check, where: str, raw: Mapping, key: str, low: float, high: float, unit: str, low_closed: bool,
            high_open: bool = False) -> float | None:
    if key not in raw:
        return None
    value = raw[key]
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    above = number and (value >= low if low_closed else value > low)
    below = number and (value < high if high_open else value <= high)
    if not (above and below):
        lo, hi = ("from" if low_closed else "above"), ("below" if high_open else "up to")
        hint = " (100 would leave no error budget)" if key == "success_rate" and value == 100 else ""
        check.add(where, key,
                  f"expected {unit}: a number {lo} {plain(low)} and {hi} {plain(high)}, got {value!r}{hint}")
        return None
    return float(value)


def _window(check, where: str, raw: Mapping) -> int | None:
    value = raw.get("window", DEFAULT_WINDOW)
    lo, hi = WINDOW_BOUNDS
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        check.add(where, "window", f"expected whole seconds from {lo} to {hi}, got {value!r}")
        return None
    return value


def to_toml(slos: tuple[SloTarget, ...]) -> dict:
    return {s.pattern: {"throughput": s.throughput, "max_latency": s.max_latency, "success_rate": s.success_rate,
                        "window": s.window} for s in slos}


# --- measurement -----------------------------------------------------------------------------

@dataclass
class Slice:
    """One slice of one queue, summed over every master: jobs, failed, late, failed or late,
    the latency histogram, and the queue's length when the slice began (for offered load)."""

    n: int = 0
    failed: int = 0
    late: int = 0
    bad: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    pending: int | None = None

    def add(self, other: Slice) -> Slice:
        return Slice(self.n + other.n, self.failed + other.failed, self.late + other.late, self.bad + other.bad,
                     sketch.merge(self.hist, other.hist), self.pending if self.pending is not None else other.pending)


def job_fields(target: SloTarget, ok: bool, latency: float) -> dict[str, int]:
    """What one finished job adds to its slice (field -> increment), as stored in Redis."""
    late = latency > target.max_latency
    return {"n": 1, "f": 0 if ok else 1, "o": 1 if late else 0, "x": 1 if late or not ok else 0,
            f"b{sketch.bucket_of(latency)}": 1}


def from_fields(fields: Mapping[str, int]) -> Slice:
    """A slice from its stored counts; counts a slice cannot hold (more failed than jobs, below 0:
    junk under the key) are cut to what it can, so junk never fakes a violation."""
    n = max(0, fields.get("n", 0))

    def part(name: str) -> int:
        return min(n, max(0, fields.get(name, 0)))

    return Slice(n=n, failed=part("f"), late=part("o"), bad=part("x"), hist=sketch.from_fields(fields) if n else {},
                 pending=None if fields.get("p") is None else max(0, fields["p"]))


def burn_rate(target: SloTarget, bad: int, n: int) -> float:
    """Budget spent per budget allowed, at the pace of these jobs (1.0: used up exactly at the end)."""
    return (bad / n) / (1 - target.objective) if n else 0.0


def evaluate(target: SloTarget, slices: Mapping[int, Slice], now: float, pending_now: int | None = None) -> dict:
    """The queue's level over the window ending now, from its slices by start time."""
    starts = window_starts(target.window, now)
    length = target.slice_seconds
    window = Slice()
    for start in starts:
        window = window.add(slices.get(start, Slice()))
    objective = target.objective
    n = window.n
    allowed = (1 - objective) * n
    remaining = 1.0 - window.bad / allowed if n else 1.0
    burns = {}
    alerts = []
    for name, long_share, short_share, threshold in BURN_ALERTS:
        rates = []
        for share in (long_share, short_share):
            count = max(1, round(len(starts) * share))
            part = Slice()
            for start in starts[-count:]:
                part = part.add(slices.get(start, Slice()))
            rates.append(burn_rate(target, part.bad, part.n))
        burns[name] = {"long": round(rates[0], 3), "short": round(rates[1], 3), "threshold": threshold,
                       "long_seconds": max(1, round(len(starts) * long_share)) * length,
                       "short_seconds": max(1, round(len(starts) * short_share)) * length}
        if min(rates) >= threshold:
            alerts.append(name)
    with_data = [s for s in starts if slices.get(s, Slice()).n or slices.get(s, Slice()).pending is not None]
    span = min(target.window, max(MIN_SLICE, now - with_data[0])) if with_data else target.window
    achieved = n / (span / 60)
    first_pending = next((slices[s].pending for s in with_data if slices[s].pending is not None), None)
    offered = None
    if pending_now is not None and first_pending is not None:
        offered = max(0.0, (n + pending_now - first_pending) / (span / 60))
    violated = n > 0 and (n - window.bad) / n < objective
    state = "no data" if n == 0 else "violated" if violated else "burning" if alerts else "ok"
    return {
        "queue": None, "pattern": target.pattern, "state": state, "jobs": n,
        "objective": {"throughput": target.throughput, "max_latency": target.max_latency,
                      "success_rate": target.success_rate, "window": target.window},
        "latency": {**{f"p{round(q * 100)}": _round(sketch.quantile(window.hist, q)) for q in QUANTILES},
                    "max": _round(sketch.quantile(window.hist, 1.0))},
        "over_max_latency": _round(window.late / n) if n else None,
        "success_rate": _round(100 * (n - window.failed) / n) if n else None,
        "good_rate": _round(100 * (n - window.bad) / n) if n else None,
        "throughput": {"achieved": _round(achieved), "offered": _round(offered), "target": target.throughput,
                       "keeps_up": None if offered is None else achieved >= 0.9 * min(offered, target.throughput)},
        "error_budget_remaining": _round(remaining), "burn_rate": burns, "alerts": alerts,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
