"""Metrics, Prometheus, long waits: what operators see, through the real daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from rq import Queue
from rq.job import JobStatus

from conftest import free_port, horizonctl, sample, scrape, wait_until


def ctl(daemon, *args):
    return horizonctl(*args, socket_path=daemon.socket)


def run_jobs(redis, good: int, failing: int) -> Queue:
    """Enqueue on qa and wait until every job has run: `good` recorded, `failing` failed."""
    queue = Queue("qa", connection=redis)
    for i in range(good):
        queue.enqueue("testjobs.record", f"ok{i}")
    bad = [queue.enqueue("testjobs.fail", f"bad{i}") for i in range(failing)]
    wait_until(lambda: redis.hlen("test:runs") == good and all(j.get_status(refresh=True) == JobStatus.FAILED
                                                                for j in bad), timeout=20, what="the jobs to run")
    return queue


def test_metrics_stats_and_healthz_after_good_and_failing_jobs(start_daemon, redis):
    port = free_port()
    daemon = start_daemon(f"""
    [metrics]
    listen = "127.0.0.1:{port}"

    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 2
    """)
    daemon.wait_ready({"alpha": 2})
    queue = run_jobs(redis, good=50, failing=3)
    def counted():
        status, text = scrape(port)
        return status == 200 and (sample(text, "horizon_jobs_processed_total", queue="qa") or 0) >= 53 and text
    text = wait_until(counted, what="the counters to catch up")
    assert sample(text, "horizon_jobs_failed_total", queue="qa", supervisor="alpha") == 3
    assert sample(text, "horizon_worker_count", supervisor="alpha", state="idle") == 2
    assert sample(text, "horizon_job_duration_seconds_count", queue="qa") >= 53
    assert sample(text, "horizon_queue_size", queue="qa") == 0
    assert sample(text, "horizon_memory_usage_bytes", supervisor="alpha") > 0
    status, body = scrape(port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "green"
    assert scrape(port, "/nope")[0] == 404

    stats = json.loads(ctl(daemon, "stats", "--json").stdout)
    assert stats["processed"] >= 53 and stats["failed"] == 3
    row = next(r for r in stats["queues"] if r["queue"] == "qa")
    assert row["failed_last_hour"] == 3 and row["runtime"] is not None
    funcs = {j["func"]: j for j in stats["jobs"]}
    assert funcs["testjobs.record"]["processed"] == 50 and funcs["testjobs.fail"]["failed"] == 3
    table = ctl(daemon, "queues")
    assert table.returncode == 0 and "qa" in table.stdout

    # red health -> 503
    for i in range(50):
        queue.enqueue("testjobs.fail", f"more{i}")
    wait_until(lambda: scrape(port, "/healthz")[0] == 503, timeout=30, what="healthz to turn red")


def notify_command(tmp_path):
    """A real [notify] command: appends the event (stdin) and two of its env vars to a file."""
    out = tmp_path / "notified"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\n{{ cat; echo " $HORIZOND_QUEUE $HORIZOND_THRESHOLD"; }} >> {out}\n')
    script.chmod(0o755)
    return script, out


class Receiver(BaseHTTPRequestHandler):
    """The webhook's far end. It runs in the server's thread, so it only keeps the raw bodies:
    the test parses and judges them (a failure in this thread would be lost)."""

    got: list[bytes] = []

    def do_POST(self):  # noqa: N802
        Receiver.got.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_long_wait_notifies_once_by_command_and_webhook(start_daemon, redis, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Receiver.got = []
    script, out = notify_command(tmp_path)
    daemon = start_daemon(f"""
    [waits]
    qa = 1

    [notify]
    command = ["{script}"]
    webhook_url = "http://127.0.0.1:{server.server_port}/hook"

    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    try:
        ctl(daemon, "pause")
        Queue("qa", connection=redis).enqueue("testjobs.record", "waiting")
        wait_until(lambda: out.exists() and out.read_text().strip(), timeout=15, what="the command to run")
        wait_until(lambda: Receiver.got, timeout=10, what="the webhook")
        event = json.loads(Receiver.got[0])
        assert event["event"] == "long_wait" and event["queue"] == "qa" and event["threshold_seconds"] == 1
        assert event["wait_seconds"] > 1 and event["pending"] == 1
        first = out.read_text()
        assert '"queue": "qa"' in first and first.strip().endswith("qa 1")
        # still waiting for several more samples: no second notification (5 minutes de-duplication)
        wait_until(lambda: (r := json.loads(ctl(daemon, "queues", "--json").stdout)) and r[0]["oldest_job_age"] > 6,
                   timeout=15, what="the wait to go on")
        assert out.read_text() == first and len(Receiver.got) == 1
        events = [e for e in daemon.log_events() if e.get("event") == "long_wait"]
        assert len(events) == 1
        assert json.loads(ctl(daemon, "queues", "--json").stdout)[0]["long_waits"] == 1
    finally:
        server.shutdown()


def test_metrics_listen_that_cannot_bind_refuses_to_start(tmp_path, redis_url, start_daemon):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        daemon = start_daemon(f"""
        [metrics]
        listen = "127.0.0.1:{port}"

        [supervisors.alpha]
        queues = ["qa"]
        """)
        assert daemon.wait_exit(20) == 1
        assert "[metrics] listen" in daemon.log_path.read_text()
    finally:
        blocker.close()


def test_snapshots_keep_trends_in_redis_bounded_by_time_not_jobs(start_daemon, redis):
    daemon = start_daemon("""
    [metrics]
    snapshot_interval = 1
    snapshot_keep_hours = 1

    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 2
    """)
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)

    def horizond_bytes():
        return sum(redis.memory_usage(k) or 0 for k in redis.scan_iter("horizond:*"))

    for i in range(100):
        queue.enqueue("testjobs.record", f"a{i}")
    wait_until(lambda: redis.hlen("test:runs") == 100, what="100 jobs")
    wait_until(lambda: redis.llen("horizond:snapshots:qa") >= 2, what="two snapshots")
    small = horizond_bytes()
    for i in range(1000):
        queue.enqueue("testjobs.record", f"b{i}")
    wait_until(lambda: redis.hlen("test:runs") == 1100, timeout=60, what="1,000 more jobs")
    count = redis.llen("horizond:snapshots:qa")
    wait_until(lambda: redis.llen("horizond:snapshots:qa") > count, what="one more snapshot")
    # 10x the jobs: the same keys, each holding one small entry per interval (plus one metrics value,
    # and this node's fleet entry and the nodes set, whose size follows the workers, not the jobs)
    keys = set(redis.scan_iter("horizond:*"))
    fleet = {k.decode().split(":")[2] for k in keys if k.startswith(b"horizond:fleet:")}
    assert fleet <= {"nodes", "node", "leader", "epoch", "demand", "roster", "desired", "commands"}  # per node
    hours = {k for k in keys if k.startswith(b"horizond:hourly:")}  # one small hash per hour, not per job
    assert 1 <= len(hours) <= 2 and all(redis.hlen(k) == 2 for k in hours)
    keys = {k for k in keys if not k.startswith((b"horizond:fleet:", b"horizond:hourly:"))}
    assert b"horizond:snapshots:qa" in keys and len(keys) == 2
    assert any(k.startswith(b"horizond:metrics:") for k in keys)
    assert horizond_bytes() < small + 400 * (redis.llen("horizond:snapshots:qa") - 1)
    assert 0 < redis.ttl("horizond:snapshots:qa") <= 3601
    rows = json.loads(ctl(daemon, "trends", "qa", "--json").stdout)
    assert rows and rows[0]["processed"] >= rows[-1]["processed"]
    assert ctl(daemon, "trends", "qa").returncode == 0
    assert ctl(daemon, "trends", "nope").returncode != 0


def test_counters_survive_a_master_restart(start_daemon, redis):
    port = free_port()
    body = f"""
    [metrics]
    listen = "127.0.0.1:{port}"

    [supervisors.alpha]
    queues = ["qa"]
    min_processes = 2
    """
    daemon = start_daemon(body)
    daemon.wait_ready({"alpha": 2})
    queue = run_jobs(redis, good=20, failing=2)
    wait_until(lambda: json.loads(ctl(daemon, "stats", "--json").stdout)["processed"] == 22, what="22 counted")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    key = next(redis.scan_iter("horizond:metrics:*"))
    assert key.decode().endswith(daemon.socket) and 0 < redis.ttl(key) <= 7 * 24 * 3600

    again = start_daemon(body)
    again.wait_ready({"alpha": 2})
    for i in range(5):
        queue.enqueue("testjobs.record", f"more{i}")
    wait_until(lambda: redis.hlen("test:runs") == 25, what="5 more jobs")
    stats = wait_until(lambda: (s := json.loads(ctl(again, "stats", "--json").stdout))["processed"] == 27 and s,
                       what="old and new counts added up")
    assert stats["failed"] == 2
    funcs = {j["func"]: j for j in stats["jobs"]}
    assert funcs["testjobs.record"]["processed"] == 25 and funcs["testjobs.fail"]["failed"] == 2
    _, text = scrape(port)
    assert sample(text, "horizon_jobs_processed_total", queue="qa", supervisor="alpha") == 27
    assert sample(text, "horizon_jobs_failed_total", queue="qa", supervisor="alpha") == 2
    assert sample(text, "horizon_job_duration_seconds_count", queue="qa") == 27


def test_unreadable_saved_metrics_are_reported_and_replaced(start_daemon, redis, tmp_path):
    socket_path = str(tmp_path / "ctl.sock")
    key = f"horizond:metrics:{os.uname().nodename}:{socket_path}"
    redis.set(key, "{not json")
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """, socket_path=socket_path)
    daemon.wait_ready({"alpha": 1})
    Queue("qa", connection=redis).enqueue("testjobs.record", "x")

    def saved():
        raw = redis.get(key)
        return raw and raw.startswith(b"{\"") and json.loads(raw)["queues"].get("qa", {}).get("processed") == 1
    wait_until(saved, what="a fresh metrics value counting the job")
    assert any(e.get("event") == "metrics_restore_failed" for e in daemon.log_events())


def test_no_long_wait_alarm_for_a_deliberate_pause_or_a_shutdown(start_daemon, redis, tmp_path):
    """With a known runtime, a queue nobody works looks infinitely late: that must not fire
    while an operator paused it (only its real wait counts) or while the daemon stops."""
    script, out = notify_command(tmp_path)
    daemon = start_daemon(f"""
    [waits]
    qa = 30

    [notify]
    command = ["{script}"]

    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    queue.enqueue("testjobs.record", "first")  # gives the queue a measured runtime
    wait_until(lambda: json.loads(ctl(daemon, "queues", "--json").stdout)[0]["runtime"] is not None,
               what="a measured runtime")
    assert ctl(daemon, "pause").returncode == 0
    queue.enqueue("testjobs.record", "held")
    wait_until(lambda: (json.loads(ctl(daemon, "queues", "--json").stdout)[0]["oldest_job_age"] or 0) > 4.5,
               what="samples of the paused queue")
    assert ctl(daemon, "continue").returncode == 0
    queue.enqueue("testjobs.block", 5, "long")
    queue.enqueue("testjobs.record", "behind")
    wait_until(lambda: redis.hget("test:started", "long"), what="the long job to start")
    daemon.signal(signal.SIGTERM)  # the worker drains for ~5 s: samples see nobody working qa
    assert daemon.wait_exit() == 0
    assert not [e for e in daemon.log_events() if e.get("event") == "long_wait"]
    assert not out.exists()
