"""Stops, restarts and reloads while jobs flow: every job runs exactly once or is still queued."""

from __future__ import annotations

import signal
import time

from rq import Queue
from rq.job import JobStatus

from conftest import alive, wait_until
from horizond.control.ctl import call

BODY = """
[supervisors.multi]
queues = ["m1", "m2"]
balance = "off"
min_processes = 3
max_processes = 3

[supervisors.single]
queues = ["s1"]
min_processes = 3
max_processes = 3
"""


def accounted(redis, ids_by_queue):
    """(missing, duplicated): jobs neither run nor waiting in their queue, and jobs run twice."""
    runs = {k.decode(): int(v) for k, v in redis.hgetall("test:runs").items()}
    queued = {q: {x.decode() for x in redis.lrange(f"rq:queue:{q}", 0, -1)} for q in ids_by_queue}
    missing = [j for q, ids in ids_by_queue.items() for j in ids if j not in runs and j not in queued[q]]
    return missing, [j for j, n in runs.items() if n > 1]


def test_sigterm_in_the_middle_of_a_flood_loses_no_job(start_daemon, redis):
    daemon = start_daemon(BODY)
    daemon.wait_ready({"multi": 3, "single": 3})
    queues = {n: Queue(n, connection=redis) for n in ("m1", "m2", "s1")}
    ids = {n: [] for n in queues}
    with redis.pipeline() as pipe:
        for i in range(1500):
            for n in ("m1", "s1"):
                ids[n].append(queues[n].enqueue("testjobs.record", f"{n}-{i}", job_id=f"{n}-{i}", pipeline=pipe).id)
        pipe.execute()
    wait_until(lambda: redis.hlen("test:runs") > 200, what="jobs to be flowing")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    missing, duplicated = accounted(redis, ids)
    assert missing == [] and duplicated == []
    assert all(redis.llen(f"rq:queue:{n}:intermediate") == 0 for n in queues)
    assert redis.hlen("test:runs") < 3000  # the stop really landed mid-flood


def test_rolling_restarts_under_load_lose_and_repeat_nothing(start_daemon, redis):
    daemon = start_daemon(BODY)
    daemon.wait_ready({"multi": 3, "single": 3})
    queues = {n: Queue(n, connection=redis) for n in ("m1", "m2", "s1")}
    ids = {n: [] for n in queues}
    restarts, i = 0, 0
    until = time.monotonic() + 8
    while time.monotonic() < until:
        for n in queues:
            ids[n].append(queues[n].enqueue("testjobs.record", f"{n}-{i}", job_id=f"{n}-{i}").id)
        i += 1
        if i % 40 == 0:
            call(daemon.socket, "restart")
            restarts += 1
    wait_until(lambda: redis.hlen("test:runs") == sum(len(v) for v in ids.values()), timeout=60,
               what="every job to run")
    missing, duplicated = accounted(redis, ids)
    assert restarts >= 5 and missing == [] and duplicated == []
    assert all(redis.llen(f"rq:queue:{n}:intermediate") == 0 for n in queues)


def test_a_worker_that_exits_cleanly_mid_job_still_has_its_job_settled(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    tries = 2
    """)
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.exit_zero", "x")
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=15, what="both attempts to end")
    assert redis.hget("test:attempts_exit", "x") == b"2"  # retried once, then failed with the cause
    assert "exit code 0" in job.latest_result().exc_string


def test_fork_per_job_workers_leave_no_job_subprocess_behind(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    worker_class = "rq.worker.Worker"
    """)
    daemon.wait_ready({"alpha": 1})
    Queue("qa", connection=redis).enqueue("testjobs.spawn_and_block", "forked")
    wait_until(lambda: redis.hget("test:started", "forked"), what="the job to start in its work horse")
    grandchild = int(redis.hget("test:grandchild", "forked"))
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: any(e.get("event") == "stop_requested" for e in daemon.log_events()), what="stop to begin")
    daemon.signal(signal.SIGTERM)  # second signal: kill now
    assert daemon.wait_exit(20) == 0
    wait_until(lambda: not alive(grandchild), timeout=5, what="the job's subprocess to be gone")
