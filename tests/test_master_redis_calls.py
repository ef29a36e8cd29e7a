"""The master's own Redis calls follow time, not the job rate (issue 15: a loop driven by deadlines).

Counted with MONITOR from the master's named connection (horizond-master-HOST-PID): while two
workers drain a stream of jobs, the master samples the queues, balances, saves its counters and
probes Redis on their periods, and a finished job costs it no Redis command at all.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from urllib.parse import urlparse

import pytest
from rq import Queue

from conftest import wait_until
from horizond.connection.redisconn import master_client_name

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli for MONITOR")

BODY = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
max_processes = 2
"""
MAX_PER_SECOND = 25  # sample (every 2 s), balance (3 s), metrics save (2 s), sweep (5 s), probe (10 s)


def _monitor(redis_url: str, out) -> subprocess.Popen:
    url = urlparse(redis_url)
    proc = subprocess.Popen(["redis-cli", "-h", url.hostname, "-p", str(url.port), "monitor"], stdout=out,
                            stderr=subprocess.DEVNULL)
    return proc


def _master_lines(path, addrs: set[str], since: float, until: float) -> list[str]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            at = float(stamp)
        except ValueError:
            continue  # "OK"
        addr = rest[1:rest.find("]")].split(" ", 1)[-1]
        if since <= at <= until and addr in addrs:
            lines.append(line)
    return lines


def _drain(redis, jobs: int, tag: str) -> tuple[float, float]:
    queue = Queue("qa", connection=redis)
    started = time.time()
    with redis.pipeline() as pipe:
        for i in range(jobs):
            queue.enqueue("testjobs.record", f"{tag}{i}", pipeline=pipe)
        pipe.execute()
    wait_until(lambda: sum(1 for k in redis.hkeys("test:runs") if k.startswith(tag.encode())) == jobs,
               timeout=120, interval=0.2, what=f"{jobs} jobs drained")
    return started, time.time()


def test_the_masters_redis_calls_per_second_do_not_grow_with_the_job_rate(start_daemon, redis, redis_url, tmp_path):
    daemon = start_daemon(BODY)
    daemon.wait_ready({"alpha": 2})
    name = master_client_name(daemon.proc.pid)
    addrs = {c["addr"] for c in redis.client_list() if c.get("name") == name}
    assert addrs, f"no Redis connection named {name}"
    out_path = tmp_path / "monitor.txt"
    with open(out_path, "w") as out:
        monitor = _monitor(redis_url, out)
        try:
            wait_until(lambda: out_path.read_text().startswith("OK"), what="MONITOR to start")
            small = _drain(redis, 200, "s")
            large = _drain(redis, 3000, "l")
        finally:
            monitor.terminate()
            monitor.wait(10)
    addrs |= {c["addr"] for c in redis.client_list() if c.get("name") == name}
    counts = {}
    for label, (since, until) in (("small", small), ("large", large)):
        lines = _master_lines(out_path, addrs, since, until)
        seconds = max(until - since, 2.0)  # the shortest period (sampling) is 2 s
        counts[label] = (len(lines), seconds)
        assert len(lines) / seconds <= MAX_PER_SECOND, (label, len(lines), seconds, lines[:40])
    # 15x the jobs: the master's commands grow with the drain's duration, never with its jobs
    print("master commands (count, seconds):", counts)
    commands, _ = counts["large"]
    assert commands <= 3000 / 20, counts
