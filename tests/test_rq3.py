"""RQ 3 under horizond: rate-limit slots are never leaked, whatever ends the job.

RQ 3's RateLimit keeps at most N jobs of a key queued or running, across hosts; a slot leaked
by a dead worker would stall every later job of that key until RQ's maintenance notices. The
master settles a dead worker's job itself, so it must release the slot as RQ's worker would.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from rq import Queue
from rq.job import JobStatus
from rq.rate_limit import RateLimit, RateLimitRegistry

from conftest import free_port, horizonctl, wait_until

ONE_WORKER = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
max_processes = 2
tries = {tries}
"""


def _started_pid(redis, tag):
    value = redis.hget("test:started", tag)
    return int(value) if value else None


def test_a_rate_limited_job_whose_worker_is_killed_frees_its_slot(start_daemon, redis):
    daemon = start_daemon(ONE_WORKER.format(tries=1))
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    limit = RateLimit("partner-api", concurrency=1)
    victim = queue.enqueue("testjobs.sleep_then_record", 30, "victim", rate_limit=limit)
    waiting = queue.enqueue("testjobs.record", "waiting", rate_limit=limit)
    registry = RateLimitRegistry("partner-api", connection=redis)
    pid = wait_until(lambda: _started_pid(redis, "victim"), what="the rate-limited job to start")
    assert waiting.get_status(refresh=True) == JobStatus.RATE_LIMITED  # the one slot is taken
    assert registry.get_allowed_job_ids() == [victim.id]

    os.kill(pid, signal.SIGKILL)
    # the master fails the dead worker's job (no tries left) and frees the slot at once,
    # so the job waiting for it runs, without waiting for RQ's registry maintenance
    wait_until(lambda: redis.hget("test:runs", "waiting") == b"1", timeout=5, what="the waiting job to run")
    assert victim.get_status(refresh=True) == JobStatus.FAILED
    wait_until(lambda: registry.get_allowed_job_count() == 0, what="the last slot to be released")
    victim.refresh()
    worker = victim.worker_name
    assert worker  # and nothing of the dead worker is left for `rq info` to show
    wait_until(lambda: not redis.exists(f"rq:worker:{worker}", f"rq:worker:{worker}:executions"),
               what="the dead worker's records to go")
    assert not redis.keys(f"rq:execution:{victim.id}:*")


def test_a_killed_job_that_is_retried_keeps_its_place_and_runs_again(start_daemon, redis):
    daemon = start_daemon(ONE_WORKER.format(tries=2))
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    limit = RateLimit("partner-api", concurrency=1)
    victim = queue.enqueue("testjobs.sleep_then_record", 1, "victim", rate_limit=limit)
    pid = wait_until(lambda: _started_pid(redis, "victim"), what="the rate-limited job to start")
    redis.hdel("test:started", "victim")
    os.kill(pid, signal.SIGKILL)
    # retried at the head of its queue: it keeps its slot and completes
    wait_until(lambda: redis.hget("test:runs", "victim") == b"1", timeout=10, what="the retried job to finish")
    assert victim.get_status(refresh=True) == JobStatus.FINISHED
    wait_until(lambda: RateLimitRegistry("partner-api", connection=redis).get_allowed_job_count() == 0,
               what="the slot to be released after the retry finished")


def test_rate_limits_are_shown_and_their_waiting_jobs_are_no_backlog(start_daemon, redis):
    port = free_port()
    daemon = start_daemon(f"""
    [metrics]
    listen = "127.0.0.1:{port}"
    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 1
    max_processes = 4
    balance = "auto"
    balance_cooldown = 0.2
    """)
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    limit = RateLimit("partner-api", concurrency=1)
    queue.enqueue("testjobs.sleep_then_record", 30, "holder", rate_limit=limit)
    waiting = [queue.enqueue("testjobs.record", f"w{i}", rate_limit=limit) for i in range(5)]
    wait_until(lambda: _started_pid(redis, "holder"), what="the rate-limited job to start")
    assert all(j.get_status(refresh=True) == JobStatus.RATE_LIMITED for j in waiting)

    row = {"key": "partner-api", "concurrency": 1, "slots_used": 1, "waiting": 5}
    stats = wait_until(lambda: (s := json.loads(horizonctl("--socket", daemon.socket, "stats", "--json").stdout))
                       ["rate_limits"] == [row] and s, what="stats to show the rate limit")
    assert stats["rate_limit_keys"] == 1
    shown = horizonctl("--socket", daemon.socket, "stats").stdout
    assert "partner-api" in shown and "WAITING" in shown
    assert daemon.status()["rate_limits"] == [row]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'horizon_rate_limit_waiting{key="partner-api"} 5.0' in body
    assert 'horizon_rate_limit_concurrency{key="partner-api"} 1.0' in body
    # five jobs wait, but more workers cannot run them: the balancer sees no backlog. Over ten
    # cooldowns (and the observer's samples) the supervisor stays at one process.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert daemon.supervisor("alpha")["target"] == 1
        time.sleep(0.1)
