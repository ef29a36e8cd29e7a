"""Figures of one replay (scripts/bench_slo.py): late jobs, percentiles and the SLO window, per queue.

A job is late when it finishes more than its queue's max_latency after it was enqueued (a job
never finished counts as late). The window objective is core/slo.py's, evaluated the way the
daemon does at the end of every minute: the jobs that finished in the last `window` seconds
(the [slo] window, cut into whole-minute slices) must be `success_rate` percent in time; a
minute at whose end they were not is a "minute in violation". All jobs succeed in the replay,
so only lateness spends the error budget.
"""

from __future__ import annotations

import math
from collections import Counter

from horizond.core import slo


def queue_figures(latencies: list[float], finished: list[float], target: slo.SloTarget | None,
                  minutes: int) -> dict:
    """One queue's figures over `minutes` minutes of replay (from time 0)."""
    ordered = sorted(latencies)
    out = {"jobs": len(ordered), **{f"p{q}": _pct(ordered, q / 100) for q in (50, 95, 99)},
           "max": _round(ordered[-1]) if ordered else None}
    if target is None:
        return out | {"max_latency": None}
    late = sum(1 for x in ordered if x > target.max_latency)
    out |= {"max_latency": target.max_latency, "success_rate": target.success_rate, "window": target.window,
            "late": late, "late_share": _round(late / len(ordered)) if ordered else 0.0}
    return out | window_figures(latencies, finished, target, minutes)


def window_figures(latencies: list[float], finished: list[float], target: slo.SloTarget, minutes: int) -> dict:
    """Minutes at whose end the window's objective was broken, and the window's worst good share."""
    length = target.slice_seconds
    jobs, bad = Counter(), Counter()
    for latency, end in zip(latencies, finished, strict=True):
        index = int(end // length)
        jobs[index] += 1
        bad[index] += latency > target.max_latency
    span = math.ceil(target.window / length)
    violated, worst, n, b = 0, 1.0, 0, 0
    for minute in range(minutes):
        # the window at the end of this minute: the slices [current - span + 1, current]
        current = int((minute * 60 + 59.999) // length)
        n = sum(jobs[i] for i in range(current - span + 1, current + 1))
        b = sum(bad[i] for i in range(current - span + 1, current + 1))
        if n:
            good = (n - b) / n
            worst = min(worst, good)
            violated += good < target.objective
    return {"minutes": minutes, "minutes_violated": violated, "worst_window_good_pct": _round(100 * worst)}


def _pct(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return _round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)])


def _round(value: float) -> float:
    return value if math.isinf(value) else round(value, 3)
