"""Limits and recovery: every job ends completed, retried, or failed with a reason."""

from __future__ import annotations

import os
import signal
import time

import psutil
from redis import Redis
from rq import Queue
from rq.job import JobStatus

from conftest import Daemon, RedisServer, alive, wait_until


def _pid(redis, tag):
    value = redis.hget("test:started", tag)
    return int(value) if value else None


def test_a_job_stuck_where_rq_timeouts_cannot_reach_is_killed_and_failed_with_the_cause(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    timeout = 1
    """, extra_master="hard_timeout_grace = 1\n")
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.ignore_alarm_and_block", 60)
    worker = wait_until(lambda: _pid(redis, "stuck"), what="the job to start")
    started = time.monotonic()
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=20, what="the hard kill")
    assert time.monotonic() - started < 5  # timeout 1 s + grace 1 s, not the 60 s the job wanted
    assert not alive(worker)
    assert "hard timeout" in job.latest_result().exc_string
    daemon.wait_ready({"alpha": 1})  # replaced


def test_memory_hard_kills_a_worker_mid_job_and_retries_the_job(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    memory = 64
    memory_hard = 150
    tries = 2
    """)
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.hog", 300, 30)
    first = wait_until(lambda: _pid(redis, "hog"), what="the job to start")
    wait_until(lambda: not alive(first), timeout=10, what="the master to kill the worker")
    events = [e for e in daemon.log_events() if e.get("event") == "worker_killed"]
    assert events and "memory_hard" in events[0]["cause"]
    # retried at once on a fresh worker (tries = 2), then killed again: failed with the cause
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=20, what="the final failure")
    assert "memory_hard: RSS" in job.latest_result().exc_string


def test_a_worker_over_memory_after_a_job_is_replaced_gracefully(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    memory = 64
    """)
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.hog", 100, 0, "leak", True)
    leaky = wait_until(lambda: _pid(redis, "leak"), what="the job to start")
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, what="the job to finish")
    wait_until(lambda: not alive(leaky), what="the leaky worker to leave")
    events = [e for e in daemon.log_events() if e.get("event") == "worker_memory_exceeded"]
    assert events and events[0]["rss_mb"] >= 100
    status = daemon.wait_ready({"alpha": 1})
    assert status["supervisors"][0]["backoff"] == []  # a recycle, not a crash


def test_a_killed_workers_job_comes_back_well_under_a_second(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 2
    tries = 2
    """)
    daemon.wait_ready({"alpha": 2})
    Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 2, "victim")
    victim = wait_until(lambda: _pid(redis, "victim"), what="the job to start")
    redis.hdel("test:started", "victim")
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: _pid(redis, "victim"), timeout=5, interval=0.005, what="the job to start again")
    assert time.monotonic() - killed_at < 1.0


def test_jobs_of_workers_that_died_with_a_sigkilled_master_are_recovered_by_the_next_one(start_daemon, redis):
    body = """
    [supervisors.alpha]
    queues = ["qa"]
    tries = 2
    """
    daemon = start_daemon(body)
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 30, "orphan")
    worker = wait_until(lambda: _pid(redis, "orphan"), what="the job to start")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    wait_until(lambda: not alive(worker), what="the worker to die with its master")
    assert job.get_status(refresh=True) == JobStatus.STARTED  # what RQ alone would leave for minutes
    redis.hdel("test:started", "orphan")
    successor = start_daemon(body)
    wait_until(lambda: _pid(redis, "orphan"), timeout=15, what="the next master to run it again")
    events = [e for e in successor.log_events() if e.get("event") == "startup_recovery"]
    assert events and job.id in events[0]["jobs"]
    assert len([k for k in redis.smembers("rq:workers") if str(worker).encode() in k]) == 0


def test_a_job_left_between_queue_and_worker_is_put_back(start_daemon, redis):
    """A worker that dies right after moving a job out of its queue leaves it in the intermediate list."""
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa", "qb"]
    balance = "off"
    """)
    daemon.wait_ready({"alpha": 1})
    from horizond.control.ctl import call

    call(daemon.socket, "pause")  # so the live worker cannot take the job first
    wait_until(lambda: daemon.supervisor("alpha")["workers"][0]["state"] == "paused", what="the worker to pause")
    job = Queue("qb", connection=redis).enqueue("testjobs.record", "stranded")
    # exactly what a worker's dequeue does before it dies
    assert redis.lmove("rq:queue:qb", "rq:queue:qb:intermediate", "LEFT", "RIGHT") == job.id.encode()
    call(daemon.socket, "continue")
    wait_until(lambda: redis.hget("test:runs", "stranded") == b"1", timeout=30, what="the stranded job to run")
    assert redis.llen("rq:queue:qb:intermediate") == 0
    assert job.get_status(refresh=True) == JobStatus.FINISHED


def test_redis_outage_keeps_everything_up_and_jobs_flow_again(tmp_path):
    server = RedisServer(tmp_path)
    daemon = Daemon(tmp_path, server.url, """
    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 2
    """)
    try:
        daemon.wait_ready({"alpha": 2})
        pids = daemon.worker_pids()
        server.stop()
        status = wait_until(lambda: (s := daemon.status()) and not s["redis"]["ok"] and s, what="the outage shown")
        assert status["state"] == "running"
        master = psutil.Process(daemon.proc.pid)
        cpu_before = sum(master.cpu_times()[:2])
        time.sleep(3)  # an outage that lasts: nobody may crash-loop or spin meanwhile
        assert daemon.proc.poll() is None
        assert sum(master.cpu_times()[:2]) - cpu_before < 0.5
        server = RedisServer(tmp_path, port=server.port)
        client = Redis.from_url(server.url)
        Queue("qa", connection=client).enqueue("testjobs.record", "after-outage")
        wait_until(lambda: client.hget("test:runs", "after-outage") == b"1", timeout=30, what="jobs to flow again")
        wait_until(lambda: daemon.status()["redis"]["ok"], timeout=15, what="status to show Redis back")
        # the workers rode the outage out (RQ retries its dequeue), they were not replaced
        assert daemon.worker_pids() == pids
    finally:
        daemon.cleanup()
        server.stop()


def test_master_over_its_memory_limit_drains_and_reexecutes_in_place(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]

    [supervisors.beta]
    queues = ["qb"]
    """, extra_master="memory_limit = 1\n")  # any real master is over 1 MB: the check fires at 10 s
    daemon.wait_ready({"alpha": 1, "beta": 1})
    assert [e for e in daemon.log_events() if e.get("event") == "memory_limit_too_low"]
    from horizond.control.ctl import call

    call(daemon.socket, "pause", supervisor="beta")
    before = daemon.worker_pids()
    in_flight = Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 12, "in-flight")
    wait_until(lambda: _pid(redis, "in-flight"), what="a job in flight")
    wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "master_reexec"], timeout=30,
               what="the drain and re-exec")
    assert in_flight.get_status(refresh=True) == JobStatus.FINISHED  # drained, not killed
    status = daemon.wait_ready({"alpha": 1, "beta": 1}, timeout=20)
    assert status["pid"] == daemon.proc.pid and daemon.proc.poll() is None  # same process, new image
    assert not daemon.worker_pids() & before
    assert {s["name"]: s["state"] for s in status["supervisors"]} == {"alpha": "running", "beta": "paused"}
    Queue("qa", connection=redis).enqueue("testjobs.record", "after-reexec")
    wait_until(lambda: redis.hget("test:runs", "after-reexec") == b"1", what="jobs to flow again")


def test_a_stop_during_the_memory_limit_drain_stops_gracefully_instead_of_killing(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """, extra_master="memory_limit = 1\n")
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 15, "draining")
    wait_until(lambda: _pid(redis, "draining"), what="a job in flight")
    wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "master_memory_exceeded"],
               timeout=20, what="the memory_limit drain to begin")
    daemon.signal(signal.SIGTERM)  # e.g. systemctl stop, while the drain runs
    assert daemon.wait_exit(30) == 0
    assert job.get_status(refresh=True) == JobStatus.FINISHED  # not killed by a "second" signal
    assert not [e for e in daemon.log_events() if e.get("event") in ("master_reexec", "stop_forced")]


def test_a_hung_redis_does_not_hold_the_loop(tmp_path):
    """Redis stopped (SIGSTOP: connections hang rather than fail): the master keeps answering
    within its 1 s Redis timeout, says Redis is away, and carries on once it is back."""
    import signal

    from horizond.control.ctl import request

    server = RedisServer(tmp_path)
    daemon = Daemon(tmp_path, server.url, """
    [supervisors.alpha]
    queues = ["qa"]
    """)
    try:
        daemon.wait_ready({"alpha": 1})
        server.proc.send_signal(signal.SIGSTOP)
        worst, seen_down, until = 0.0, False, time.monotonic() + 6
        while time.monotonic() < until:
            started = time.monotonic()
            status = request(daemon.socket, "status", timeout=10)["result"]
            worst = max(worst, time.monotonic() - started)
            seen_down = seen_down or not status["redis"]["ok"]
        assert seen_down and worst < 1.0, (seen_down, worst)
        server.proc.send_signal(signal.SIGCONT)
        client = Redis.from_url(server.url)
        Queue("qa", connection=client).enqueue("testjobs.record", "after-hang")
        wait_until(lambda: client.hget("test:runs", "after-hang") == b"1", timeout=30, what="jobs to flow again")
        wait_until(lambda: daemon.status()["redis"]["ok"], timeout=15, what="status to show Redis back")
    finally:
        server.proc.send_signal(signal.SIGCONT)
        daemon.cleanup()
        server.stop()
