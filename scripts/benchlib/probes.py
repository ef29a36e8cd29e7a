"""scripts/bench probes beside throughput: spawn time, per-worker memory, master soak."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
from rq import Queue
from run import HERE, Bench, stop, wait_for

sys.path.insert(0, str(HERE.parent.parent))
from horizond.control.ctl import request  # noqa: E402


def _launch(bench: Bench, argv: list[str], tag: str) -> subprocess.Popen:
    return bench.launch(argv, tag)


def _registered(bench: Bench) -> int:
    return bench.redis.scard("rq:workers")


def _launch_to(bench: Bench, argv: list[str], count: int, tag: str) -> float:
    """Seconds from launching argv until `count` workers are registered."""
    bench.redis.flushall()
    proc = _launch(bench, argv, tag)
    try:
        started = time.perf_counter()
        wait_for(lambda: _registered(bench) == count, 30, f"{count} workers of {tag}")
        return time.perf_counter() - started
    finally:
        stop(proc)


def spawn_times(bench: Bench, n: int = 20) -> dict:
    """Seconds until n workers are registered in Redis.

    horizond: from `horizonctl scale bench N` on a running master with one worker
    (fork from the master), and from launching the daemon. rq worker-pool: from launch.
    """
    out = {}
    bench.redis.flushall()
    proc = _launch(bench, bench.horizond_cmd(1), "spawn-horizond")
    try:
        started = time.perf_counter()
        wait_for(lambda: _registered(bench) == 1, 30, "horizond's first worker")
        out["horizond_launch_to_1"] = time.perf_counter() - started
        started = time.perf_counter()
        request(str(bench.work / "ctl.sock"), "scale", supervisor="bench", processes=n)
        wait_for(lambda: _registered(bench) == n, 30, f"{n} horizond workers")
        out[f"horizond_scale_1_to_{n}"] = time.perf_counter() - started
    finally:
        stop(proc)
    for count in (n, n // 2):
        out[f"horizond_launch_to_{count}"] = _launch_to(bench, bench.horizond_cmd(count), count, "spawn-horizond")
        out[f"rq_pool_launch_to_{count}"] = _launch_to(bench, bench.rq_pool_cmd(count, ["default"]), count,
                                                       "spawn-rq")
    return out


def worker_memory(bench: Bench, procs: int = 4) -> dict:
    """Mean USS/PSS per worker after each ran a job of the heavy module, with and without preload."""
    out = {}
    for preload in ((), ("benchheavy",)):
        bench.redis.flushall()
        proc = _launch(bench, bench.horizond_cmd(procs, preload), "memory")
        try:
            wait_for(lambda: _registered(bench) == procs, 60, "workers")
            queue = Queue("default", connection=bench.redis)
            queue.enqueue_many([Queue.prepare_data("benchjobs.heavy") for _ in range(200)])
            wait_for(lambda: bench.redis.zcard("rq:finished:default") == 200, 120, "200 heavy jobs")
            status = request(str(bench.work / "ctl.sock"), "status")["result"]
            pids = [w["pid"] for s in status["supervisors"] for w in s["workers"]]
            infos = [psutil.Process(pid).memory_full_info() for pid in pids]
            master = psutil.Process(proc.pid).memory_full_info()
            tag = "preload" if preload else "no_preload"
            out[tag] = {"worker_uss_mb": sum(i.uss for i in infos) / len(infos) / 2**20,
                        "worker_pss_mb": sum(i.pss for i in infos) / len(infos) / 2**20,
                        "worker_rss_mb": sum(i.rss for i in infos) / len(infos) / 2**20,
                        "master_pss_mb": master.pss / 2**20,
                        "total_pss_mb": (master.pss + sum(i.pss for i in infos)) / 2**20}
        finally:
            stop(proc)
    return out


def soak(bench: Bench, seconds: float, procs: int = 2, every: float = 30.0) -> dict:
    """Master CPU and RSS of an idle horizond over a long run (RSS sampled every `every` s)."""
    bench.redis.flushall()
    proc = _launch(bench, bench.horizond_cmd(procs), "soak")
    try:
        wait_for(lambda: _registered(bench) == procs, 30, "workers")
        time.sleep(2.0)
        master = psutil.Process(proc.pid)
        cpu0, t0 = sum(master.cpu_times()[:2]), time.perf_counter()
        samples = [master.memory_info().rss]
        while time.perf_counter() - t0 < seconds:
            time.sleep(min(every, seconds - (time.perf_counter() - t0)))
            samples.append(master.memory_info().rss)
        cpu = (sum(master.cpu_times()[:2]) - cpu0) / (time.perf_counter() - t0)
        return {"seconds": seconds, "master_cpu_pct": 100 * cpu, "rss_start_mb": samples[0] / 2**20,
                "rss_end_mb": samples[-1] / 2**20, "rss_max_mb": max(samples) / 2**20, "samples": len(samples)}
    finally:
        stop(proc)
