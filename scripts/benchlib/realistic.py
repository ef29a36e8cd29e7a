"""The realistic workload of scripts/bench: the demo's queues and mix at etc/horizond.toml's process counts.

Jobs wait on I/O for 20-200 ms (uniform), 2% fail their first attempt and succeed on their
retry (Retry(max=2, interval=1): the scheduler re-queues them after 1 s), a quarter have
result_ttl=0. They go to the demo's queues with the demo's weights (horizond/demo.py MIX).
Each supervisor of etc/horizond.toml gets max_processes x scale workers (at least 1), fixed:
horizond with balance = "off" and min = max, rq worker-pool as one pool per supervisor with the
same count and queues. Two phases on one launch:

- paced: Poisson arrivals at `rate` jobs/s for `seconds`; each job notes its wait (enqueue to
  start) in a file of its worker process (no Redis traffic): p50/p99 wait;
- backlog: `jobs` enqueued at once, timed until drained: jobs/s.

Total PSS (the launched processes and all their descendants) is sampled at the end of the paced phase.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import psutil
from redis import Redis
from rq import Queue, Retry
from run import ROOT, Bench, stop, wait_for

sys.path.insert(0, str(ROOT))
from horizond.demo import MIX  # noqa: E402

FAIL_EVERY = 50  # 2% of jobs fail their first attempt
TTL0_EVERY = 4  # a quarter of jobs: result_ttl=0


def supervisors(scale: float, config: Path = ROOT / "etc" / "horizond.toml") -> dict[str, dict]:
    """{name: {"queues": [...], "processes": n}} from the config's supervisors, max_processes scaled."""
    data = tomllib.loads(config.read_text())
    default_max = data.get("defaults", {}).get("max_processes", 10)
    return {name: {"queues": sup["queues"], "full": sup.get("max_processes", default_max),
                   "processes": max(1, round(sup.get("max_processes", default_max) * scale))}
            for name, sup in data["supervisors"].items()}


def horizond_argv(bench: Bench, sups: dict[str, dict]) -> list[str]:
    config = bench.work / "bench-realistic.toml"
    body = bench.horizond_config()
    for name, sup in sups.items():
        body += (f'\n[supervisors.{name}]\nqueues = {sup["queues"]!r}\nbalance = "off"\n'
                 f'min_processes = {sup["processes"]}\nmax_processes = {sup["processes"]}\n').replace("'", '"')
    config.write_text(body)
    return [sys.executable, "-m", "horizond", "--config", str(config), "--log-level", "warning"]


def rq_pool_argvs(bench: Bench, sups: dict[str, dict]) -> list[list[str]]:
    return [bench.rq_pool_cmd(sup["processes"], sup["queues"]) for sup in sups.values()]


class Jobs:
    """Makes the workload's jobs, the same sequence for every contender (seeded)."""

    def __init__(self, redis: Redis, seed: int = 14):
        self.rng = random.Random(seed)
        self.queues = {name: Queue(name, connection=redis) for name, *_ in MIX}
        self.weights = [weight for _, _, weight, _ in MIX]
        self.count = 0

    def enqueue(self, n: int, note_wait: bool, pipeline=None) -> None:
        for _ in range(n):
            name = self.rng.choices(list(self.queues), self.weights)[0]
            self.count += 1
            self.queues[name].enqueue(
                "benchjobs.realistic", self.rng.randint(20, 200), self.count % FAIL_EVERY == 0, note_wait,
                retry=Retry(max=2, interval=1), result_ttl=0 if self.count % TTL0_EVERY == 0 else None,
                pipeline=pipeline)

    def pending(self, redis: Redis) -> int:
        """Jobs waiting, running or scheduled for a retry, over all the workload's queues."""
        pipe = redis.pipeline(transaction=False)
        for q in self.queues.values():
            pipe.llen(q.key).llen(q.intermediate_queue_key).zcard(q.started_job_registry.key)
            pipe.zcard(q.scheduled_job_registry.key)
        return sum(pipe.execute())


def run(bench: Bench, name: str, argvs: list[list[str]], workers: int, rate: float, seconds: float,
        backlog: int) -> dict:
    bench.redis.flushall()
    waits_dir = Path(tempfile.mkdtemp(prefix=f"waits-{name}-", dir=bench.work))  # this run's only
    env = dict(bench.env, BENCH_WAITS_DIR=str(waits_dir))
    procs = [bench.launch(argv, f"realistic-{name}", env) for argv in argvs]
    try:
        wait_for(lambda: bench.redis.scard("rq:workers") >= workers, 60, f"{workers} workers of {name}")
        jobs = Jobs(bench.redis)
        paced_start = time.perf_counter()
        due = paced_start
        while (now := time.perf_counter()) - paced_start < seconds:
            if now < due:
                time.sleep(due - now)
            jobs.enqueue(1, note_wait=True)
            due += jobs.rng.expovariate(rate)
        paced_jobs = jobs.count
        wait_for(lambda: jobs.pending(bench.redis) == 0, 120, f"{name}: the paced jobs")
        pss = _pss_mb(procs)
        pipe = bench.redis.pipeline(transaction=False)
        jobs.enqueue(backlog, note_wait=False, pipeline=pipe)
        pipe.execute()
        started = time.perf_counter()
        while jobs.pending(bench.redis):
            time.sleep(0.05)
        drained = time.perf_counter() - started
        failed = sum(q.failed_job_registry.count for q in jobs.queues.values())
    finally:
        for proc in procs:
            stop(proc)
    noted = [line.split() for f in waits_dir.iterdir() for line in f.read_text().splitlines()]
    if len(noted) != paced_jobs:  # each paced job notes its first attempt once
        raise RuntimeError(f"{name}: {len(noted)} waits noted for {paced_jobs} paced jobs")
    waits = sorted(float(ms) for _, ms in noted)
    by_queue = {q: sorted(float(ms) for origin, ms in noted if origin == q) for q in jobs.queues}
    return {"name": name, "workers": workers, "rate": rate, "paced_seconds": seconds, "paced_jobs": paced_jobs,
            "waits_noted": len(waits), "wait_p50_ms": _pct(waits, 50), "wait_p99_ms": _pct(waits, 99),
            "wait_max_ms": waits[-1] if waits else None, "total_pss_mb": pss, "backlog_jobs": backlog,
            "backlog_seconds": drained, "jobs_per_s": backlog / drained, "failed_for_good": failed,
            "waits_by_queue": {q: {"jobs": len(w), "p50_ms": _pct(w, 50), "p99_ms": _pct(w, 99)}
                               for q, w in by_queue.items()}}


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def _pss_mb(procs) -> float:
    total = 0
    for proc in procs:
        top = psutil.Process(proc.pid)
        for p in [top, *top.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
    return total / 2**20
