"""Counting a supervisor tree's worker processes per queue (one definition for every reader)."""

from __future__ import annotations

from collections.abc import Iterable


def processes_per_queue(supervisors: Iterable, skip_paused: bool = False) -> tuple[dict[str, int], set[str]]:
    """Live processes serving each queue (a pool over several queues counts for each), and the
    queues that only paused supervisors serve. With `skip_paused`, paused supervisors' processes
    count 0: they take no jobs."""
    counts: dict[str, int] = {}
    unpaused: set[str] = set()
    for sup in supervisors:
        for pool in sup.pools.values():
            active = 0 if (skip_paused and sup.paused) else len(pool.live())
            for queue in pool.queues:
                counts[queue] = counts.get(queue, 0) + active
                if not sup.paused:
                    unpaused.add(queue)
    return counts, set(counts) - unpaused
