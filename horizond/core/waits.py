"""Long waits: how long a new job would wait on each queue, and which queues cross their threshold.

Pure (no clock, no Redis): the sampler passes the sample and the time in, the notifier
passes its dedupe state in and gets the new one back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

DEDUPE = 300.0  # one notification per queue per five minutes
NEVER = 1e9  # how an endless wait is reported (JSON has no infinity)


def estimated_waits(pending: Mapping[str, int], ages: Mapping[str, float], runtimes: Mapping[str, float | None],
                    working: Mapping[str, int], paused: set[str]) -> dict[str, float]:
    """The longer of the oldest job's age and the backlog's pace (pending x runtime / processes).

    A queue nobody works (a crash loop, scaled to 0) waits for ever once a job's runtime is
    known; a paused one waits what it waited (pausing is on purpose)."""
    waits = {}
    for queue, count in pending.items():
        runtime = runtimes.get(queue) or 0.0
        workers = working.get(queue, 0)
        if workers:
            backlog = count * runtime / workers
        else:
            backlog = float("inf") if count and runtime and queue not in paused else 0.0
        waits[queue] = max(ages.get(queue, 0.0), backlog)
    return waits


def crossing(waits: Mapping[str, float], threshold: Callable[[str], int | None], now: float,
             notified: Mapping[str, float], dedupe: float = DEDUPE
             ) -> tuple[list[tuple[str, float, int]], dict[str, float]]:
    """The queues over their threshold not reported in the last `dedupe` seconds, as
    (queue, wait, threshold) with an endless wait as NEVER; and the new dedupe state."""
    out = []
    state = dict(notified)
    for queue, wait in waits.items():
        limit = threshold(queue)
        if limit and wait > limit and now - state.get(queue, -dedupe) >= dedupe:
            state[queue] = now
            out.append((queue, wait if wait != float("inf") else NEVER, limit))
    return out, state
