"""How many worker processes take jobs from each queue: one count for status, stats and long waits."""

from __future__ import annotations

from collections.abc import Iterable


def processes_per_queue(pools: Iterable[tuple[tuple[str, ...], int, bool]]) -> tuple[dict[str, int], set[str]]:
    """From (queues, live processes, paused) per pool: the processes taking jobs per queue (a paused
    pool's count as 0), and the queues that only paused pools serve (nobody is falling behind there)."""
    counts: dict[str, int] = {}
    unpaused: set[str] = set()
    for queues, live, paused in pools:
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + (0 if paused else live)
            if not paused:
                unpaused.add(queue)
    return counts, set(counts) - unpaused
