"""Job metrics kept by the master: what its workers report, aggregated in memory.

Pure bookkeeping (the clock is passed in): per queue and per job function,
processed and failed counts, mean and recent runtime, wait (enqueue -> start),
a runtime histogram for Prometheus, and per-minute buckets for "jobs per
minute" and "failed in the last hour". Memory is bounded by the number of
queues and functions, never by the number of jobs; the counters live in the
master, so they survive worker restarts, and `dump`/`merge` let the shell keep
them in Redis so they survive a master restart too (metricstore.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RECENT_WEIGHT = 0.1  # weight of the newest job in the "recent runtime" moving average
MINUTES_KEPT = 60


@dataclass
class Tally:
    processed: int = 0
    failed: int = 0
    runtime_sum: float = 0.0
    runtime_count: int = 0
    recent_runtime: float | None = None
    wait_sum: float = 0.0
    wait_count: int = 0
    recent_wait: float | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    minutes: deque = field(default_factory=lambda: deque(maxlen=MINUTES_KEPT))  # [minute, done, failed]

    def add(self, ok: bool, runtime: float | None, wait: float | None, minute: int) -> None:
        self.processed += 1
        self.failed += 0 if ok else 1
        if runtime is not None:
            self.runtime_sum += runtime
            self.runtime_count += 1
            self.recent_runtime = runtime if self.recent_runtime is None else \
                self.recent_runtime + RECENT_WEIGHT * (runtime - self.recent_runtime)
            for i, edge in enumerate(BUCKETS):
                if runtime <= edge:
                    self.buckets[i] += 1
        if wait is not None:
            self.wait_sum += wait
            self.wait_count += 1
            self.recent_wait = wait if self.recent_wait is None else \
                self.recent_wait + RECENT_WEIGHT * (wait - self.recent_wait)
        if not self.minutes or self.minutes[-1][0] != minute:
            self.minutes.append([minute, 0, 0])
        self.minutes[-1][1] += 1
        self.minutes[-1][2] += 0 if ok else 1

    def per_minute(self, minute: int) -> int:
        """Jobs done in the last full minute (the current one is still filling)."""
        return sum(m[1] for m in self.minutes if m[0] == minute - 1)

    def failed_since(self, minute: int) -> int:
        return sum(m[2] for m in self.minutes if m[0] >= minute)

    def mean_runtime(self) -> float | None:
        return self.runtime_sum / self.runtime_count if self.runtime_count else None

    def mean_wait(self) -> float | None:
        return self.wait_sum / self.wait_count if self.wait_count else None

    def dump(self) -> dict:
        return {"processed": self.processed, "failed": self.failed, "runtime_sum": self.runtime_sum,
                "runtime_count": self.runtime_count, "recent_runtime": self.recent_runtime,
                "wait_sum": self.wait_sum, "wait_count": self.wait_count, "recent_wait": self.recent_wait,
                "buckets": list(self.buckets), "minutes": [list(m) for m in self.minutes]}

    def merge(self, saved: dict) -> None:
        """Add a saved tally's counts to this one. Recent averages already measured in this
        run win over saved ones, which describe an older past."""
        for name in ("processed", "failed", "runtime_count", "wait_count"):
            setattr(self, name, getattr(self, name) + int(saved[name]))
        self.runtime_sum += float(saved["runtime_sum"])
        self.wait_sum += float(saved["wait_sum"])
        if self.recent_runtime is None:
            self.recent_runtime = saved["recent_runtime"]
        if self.recent_wait is None:
            self.recent_wait = saved["recent_wait"]
        if len(saved["buckets"]) == len(BUCKETS):  # bucket edges changed between versions: drop the old shape
            self.buckets = [a + int(b) for a, b in zip(self.buckets, saved["buckets"], strict=True)]
        by_minute: dict[int, list[int]] = {}
        for minute, done, failed in list(saved["minutes"]) + list(self.minutes):
            row = by_minute.setdefault(int(minute), [int(minute), 0, 0])
            row[1] += int(done)
            row[2] += int(failed)
        self.minutes = deque((by_minute[m] for m in sorted(by_minute)), maxlen=MINUTES_KEPT)


class Metrics:
    def __init__(self):
        self.queues: dict[str, Tally] = {}
        self.jobs: dict[tuple[str, str], Tally] = {}
        self.supervisor_of: dict[str, str] = {}
        self.long_waits: dict[str, int] = {}
        self.changes = 0  # bumped on every update, so the shell saves only when something changed

    def dump(self) -> dict:
        return {"version": 1, "queues": {q: t.dump() for q, t in self.queues.items()},
                "jobs": [[q, f, t.dump()] for (q, f), t in self.jobs.items()],
                "supervisor_of": dict(self.supervisor_of), "long_waits": dict(self.long_waits)}

    def merge(self, saved: dict) -> None:
        """Fold a dump from an earlier run into this one (counts add up; see Tally.merge)."""
        if saved.get("version") != 1:
            raise ValueError(f"unknown metrics format version {saved.get('version')!r}")
        for queue, tally in saved["queues"].items():
            self.queues.setdefault(queue, Tally()).merge(tally)
        for queue, func, tally in saved["jobs"]:
            self.jobs.setdefault((queue, func), Tally()).merge(tally)
        for queue, sup in saved["supervisor_of"].items():
            self.supervisor_of.setdefault(queue, sup)
        for queue, count in saved["long_waits"].items():
            self.long_waits[queue] = self.long_waits.get(queue, 0) + int(count)
        self.changes += 1

    def record(self, queue: str, supervisor: str, func: str | None, ok: bool, runtime: float | None,
               wait: float | None, now: float) -> None:
        minute = int(now // 60)
        self.supervisor_of[queue] = supervisor
        self.queues.setdefault(queue, Tally()).add(ok, runtime, wait, minute)
        self.jobs.setdefault((queue, func or "?"), Tally()).add(ok, runtime, wait, minute)
        self.changes += 1

    def long_wait(self, queue: str) -> None:
        self.long_waits[queue] = self.long_waits.get(queue, 0) + 1
        self.changes += 1

    def runtime(self, queue: str) -> float | None:
        tally = self.queues.get(queue)
        return (tally.recent_runtime or tally.mean_runtime()) if tally else None

    def queue_rows(self, now: float, pending: dict[str, int], processes: dict[str, int]) -> list[dict]:
        minute = int(now // 60)
        rows = []
        for queue in sorted(set(pending) | set(self.queues)):
            tally = self.queues.get(queue, Tally())
            runtime = tally.recent_runtime or tally.mean_runtime()
            waiting, workers = pending.get(queue, 0), processes.get(queue, 0)
            rows.append({
                "queue": queue, "pending": waiting, "processes": workers,
                "processed": tally.processed, "failed": tally.failed,
                "jobs_per_minute": tally.per_minute(minute), "failed_last_hour": tally.failed_since(minute - 59),
                "runtime": tally.mean_runtime(), "recent_runtime": tally.recent_runtime, "wait": tally.mean_wait(),
                "time_to_clear": time_to_clear(waiting, runtime, workers),
                "long_waits": self.long_waits.get(queue, 0),
            })
        return rows

    def job_rows(self, now: float) -> list[dict]:
        minute = int(now // 60)
        return [{"queue": q, "func": f, "processed": t.processed, "failed": t.failed, "runtime": t.mean_runtime(),
                 "recent_runtime": t.recent_runtime, "wait": t.mean_wait(), "jobs_per_minute": t.per_minute(minute)}
                for (q, f), t in sorted(self.jobs.items())]


def time_to_clear(pending: int, runtime: float | None, processes: int) -> float | None:
    """Seconds until the queue is empty at the measured pace (None: no pace yet; inf: nobody works it)."""
    if pending == 0:
        return 0.0
    if runtime is None:
        return None
    return float("inf") if processes == 0 else pending * runtime / processes
