"""Scaler: gathers what the balancer needs and runs each supervisor's balancing step.

The balancer (balancer.py) decides from numbers; this module gathers them: queue
lengths from the master's one sampler (observe/observer.py; the master samples
afresh when its sample is older than half the cooldown), the runtime of each queue measured from the
workers' own reports (a moving average, so the "time" strategy works from the
first jobs on), free memory from psutil, and which queues a pattern matches now.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable

import psutil
from redis import Redis

from horizond.supervise.supervisor import Supervisor, is_pattern

log = logging.getLogger("horizond.scaling")

RUNTIME_WEIGHT = 0.2  # weight of the newest job in the moving average
QUEUES_KEY = "rq:queues"


class Scaler:
    def __init__(self):
        self.runtimes: dict[str, float] = {}
        self._memory_low: set[str] = set()

    def job_finished(self, queue: str, seconds: float) -> None:
        old = self.runtimes.get(queue)
        self.runtimes[queue] = seconds if old is None else old + RUNTIME_WEIGHT * (seconds - old)

    def step(self, redis: Redis, supervisors: list[Supervisor], now: float,
             depths: Callable[[list[Supervisor]], dict[str, int]]) -> None:
        """Balance the supervisors whose cooldown has passed; `depths` gives the pending jobs
        per queue for them (after their patterns are resolved here)."""
        due = [s for s in supervisors if s.balance_due(now)]
        if not due:
            return
        try:
            existing = existing_queues(redis) if any(is_pattern(q) for s in due for q in s.config.queues) else ()
            for sup in due:
                sup.set_queues(resolve(sup.config.queues, existing), now)
            pending = depths(due)
        except Exception as exc:  # Redis away: keep the current targets
            log.debug("balancing skipped", extra={"event": "balance_skipped", "error": str(exc)})
            return
        memory = psutil.virtual_memory()
        for sup in due:
            memory_ok = memory.available >= sup.config.free_memory_floor(memory.total)
            self._report_memory(sup, memory_ok, memory.available)
            sup.rebalance(pending, self.runtimes, memory_ok, now)

    def _report_memory(self, sup: Supervisor, ok: bool, available: int) -> None:
        if ok == (sup.name not in self._memory_low):
            return
        if ok:
            self._memory_low.discard(sup.name)
            log.info("free memory back: scaling up allowed again", extra={"event": "memory_guard_off",
                                                                          "supervisor": sup.name})
        else:
            self._memory_low.add(sup.name)
            log.warning("free memory low: not scaling up", extra={
                "event": "memory_guard_on", "supervisor": sup.name, "available_mb": available // (1024 * 1024),
                "min_free_memory": sup.config.min_free_memory})


def existing_queues(redis: Redis) -> list[str]:
    return sorted(k.decode().removeprefix("rq:queue:") for k in redis.smembers(QUEUES_KEY))


def resolve(configured: tuple[str, ...], existing) -> tuple[str, ...]:
    """The queue list with each pattern replaced by the queues it matches now (sorted), in order."""
    out: dict[str, None] = {}
    for name in configured:
        if is_pattern(name):
            out.update(dict.fromkeys(q for q in existing if fnmatch.fnmatchcase(q, name)))
        else:
            out[name] = None
    return tuple(out)
