"""How many worker processes serve each queue: one count for status, stats and long waits."""

from __future__ import annotations

from collections.abc import Iterable


def processes_per_queue(pools: Iterable[tuple[tuple[str, ...], int, bool]],
                        count_paused: bool = False) -> tuple[dict[str, int], set[str]]:
    """From (queues, live processes, paused) per pool: the processes per queue (a pool over several
    queues counts for each), and the queues that only paused pools serve (nobody is falling behind
    there). A paused pool's processes take no jobs, so they count 0 unless `count_paused` (status
    shows the processes that exist, paused or not)."""
    counts: dict[str, int] = {}
    unpaused: set[str] = set()
    for queues, live, paused in pools:
        for queue in queues:
            counts[queue] = counts.get(queue, 0) + (0 if paused and not count_paused else live)
            if not paused:
                unpaused.add(queue)
    return counts, set(counts) - unpaused


def pools_of(supervisors: Iterable) -> list[tuple[tuple[str, ...], int, bool]]:
    """(queues, live processes, paused) for every pool of these supervisors."""
    return [(pool.queues, len(pool.live()), sup.paused) for sup in supervisors for pool in sup.pools.values()]
