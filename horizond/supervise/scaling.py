"""Scaler: gathers what the balancer needs and runs each supervisor's balancing step.

The balancer (balancer.py) decides from numbers; this module gathers them: queue
lengths from the master's one sampler (observe/observer.py; the master samples
afresh when its sample is older than half the cooldown), the runtime of each queue measured from the
workers' own reports (a moving average, so the "time" strategy works from the
first jobs on), free memory from psutil, and which queues a pattern matches now.
For the "latency" strategy also each queue's oldest job's age (the same sample), its arrival
rate (core/arrivals.py, from the sample and the jobs this master saw finish) and its service
level's max_latency ([slo]).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable

import psutil
from redis import Redis

from horizond.core import arrivals, slo
from horizond.core.config import is_pattern
from horizond.core.slo import SloTarget
from horizond.supervise.supervisor import LatencyFacts, Supervisor

log = logging.getLogger("horizond.scaling")

RUNTIME_WEIGHT = 0.2  # weight of the newest job in the moving average
QUEUES_KEY = "rq:queues"


class Scaler:
    def __init__(self):
        self.runtimes: dict[str, float] = {}
        self._memory_low: set[str] = set()
        self.finished: dict[str, int] = {}  # queue -> jobs this master saw finish (a running total)
        self.arrival_rates: dict[str, float] = {}  # queue -> jobs/s (smoothed), for "latency"
        self._points: dict[str, arrivals.Point] = {}

    def job_finished(self, queue: str, seconds: float | None) -> None:
        self.finished[queue] = self.finished.get(queue, 0) + 1
        if seconds is None:
            return
        old = self.runtimes.get(queue)
        self.runtimes[queue] = seconds if old is None else old + RUNTIME_WEIGHT * (seconds - old)

    def step(self, redis: Redis, supervisors: list[Supervisor], now: float,
             depths: Callable[[list[Supervisor]], tuple[dict[str, int], dict[str, float]]],
             slos: tuple[SloTarget, ...] = ()) -> None:
        """Balance the supervisors whose cooldown has passed; `depths` gives the pending jobs
        per queue for them and their oldest jobs' ages (after their patterns are resolved here)."""
        due = [s for s in supervisors if s.balance_due(now)]
        if not due:
            return
        try:
            existing = existing_queues(redis) if any(is_pattern(q) for s in due for q in s.config.queues) else ()
            for sup in due:
                sup.set_queues(resolve(sup.config.queues, existing), now)
            pending, ages = depths(due)
        except Exception as exc:  # Redis away: keep the current targets
            log.debug("balancing skipped", extra={"event": "balance_skipped", "error": str(exc)})
            return
        facts = self._latency_facts(supervisors, due, pending, ages, slos, now)
        memory = psutil.virtual_memory()
        for sup in due:
            memory_ok = memory.available >= sup.config.free_memory_floor(memory.total)
            self._report_memory(sup, memory_ok, memory.available)
            sup.rebalance(pending, self.runtimes, memory_ok, now, facts)

    def _latency_facts(self, supervisors: list[Supervisor], due: list[Supervisor], pending: dict[str, int],
                       ages: dict[str, float], slos: tuple[SloTarget, ...], now: float) -> LatencyFacts | None:
        """Ages, arrival rates and levels of the queues of the due "latency" supervisors (None if
        none is due: the other strategies need none of it)."""
        queues = {q for sup in due if sup.config.auto_scaling_strategy == "latency"
                  for pool in sup.pools.values() for q in pool.queues}
        if not queues:
            return None
        running: dict[str, int] = {}
        for sup in supervisors:  # a queue may be served by several supervisors: all its running jobs
            for proc in sup.processes():
                if proc.state == "busy" and proc.job_queue:
                    running[proc.job_queue] = running.get(proc.job_queue, 0) + 1
        levels = {}
        for queue in queues:
            point = arrivals.Point(now, pending.get(queue, 0) + running.get(queue, 0), self.finished.get(queue, 0))
            before = self._points.get(queue)
            self.arrival_rates[queue] = arrivals.rate(self.arrival_rates.get(queue, 0.0), before, point)
            self._points[queue] = point
            target = slo.slo_for(slos, queue)
            levels[queue] = target.max_latency if target else None
        return LatencyFacts(ages=dict(ages), rates=dict(self.arrival_rates), max_latency=levels)

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
