"""How fast jobs arrive on a queue, for the "latency" balancing strategy (issue 19).

RQ keeps no count of enqueued jobs, and counting them would cost every enqueue a command.
What a master does see is enough: between two balancing steps, the jobs that arrived are the
growth of the queue's jobs in the system (pending + running) plus the jobs that finished. So
arrivals(t0..t1) = (pending1 + running1) - (pending0 + running0) + finished(t0..t1).

On one host that is exact. In a fleet each master counts only its own finished jobs and its
own running ones, so it sees the arrivals its own workers take (plus the queue's growth):
the steady-state part of each node's need is its own share, and the nodes' needs add up to
the queue's (the backlog term, like the "time" strategy's share, is seen by every node, and
the fleet budget bounds it).

The rate is smoothed with an exponentially weighted mean whose weight follows the elapsed
time (a half-life in seconds, not in steps), so it means the same whatever the cooldown.
Pure: the shell passes points and clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HALF_LIFE = 30.0  # seconds: a burst lifts the rate within a few steps, a lull lowers it as fast
MIN_INTERVAL = 0.001  # seconds: a shorter interval says nothing (and its rate would overflow)


@dataclass(frozen=True)
class Point:
    at: float  # monotonic seconds
    in_system: int  # pending + running jobs of the queue
    finished: int  # this master's finished jobs of the queue so far (a running total)


def rate(previous: float, before: Point | None, now: Point, half_life: float = HALF_LIFE) -> float:
    """The smoothed arrival rate (jobs/s) after one more interval; the previous rate if the
    interval says nothing (first point, under a millisecond, a counter reset)."""
    if before is None:
        return previous
    seconds = now.at - before.at
    finished = now.finished - before.finished
    if not seconds >= MIN_INTERVAL or finished < 0 or not math.isfinite(seconds):
        return previous
    arrived = max(0, now.in_system - before.in_system + finished)
    instant = arrived / seconds
    weight = 1.0 - 0.5 ** (seconds / half_life)
    return max(0.0, previous + weight * (instant - previous))
