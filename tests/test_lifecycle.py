"""Worker life cycle: crash loops back off, recycling is not a crash, bad imports never spin."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
from rq import Queue

from conftest import ROOT, child_env, wait_until


def test_a_slot_that_keeps_dying_backs_off_and_the_master_does_not_spin(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.good]
    queues = ["qg"]

    [supervisors.broken]
    queues = ["qb"]
    worker_class = "no_such_module.Worker"
    """)
    daemon.wait_ready({"good": 1})
    sup = wait_until(lambda: (s := daemon.supervisor("broken")) and s["backoff"] and s["backoff"][0]["failures"] >= 3
                     and s, timeout=15, what="the broken slot to back off")
    assert "exit code 3" in sup["backoff"][0]["last_exit"]
    # over the next 4 s the slot may try at most ~twice more (delays 2 s, 4 s ...)
    master = psutil.Process(daemon.proc.pid)
    cpu_before = sum(master.cpu_times()[:2])
    failures = sup["backoff"][0]["failures"]
    time.sleep(4)  # measuring a rate over a fixed window: the window is the point here
    later = daemon.supervisor("broken")["backoff"][0]["failures"]
    assert later - failures <= 2
    assert sum(master.cpu_times()[:2]) - cpu_before < 0.5
    events = [e for e in daemon.log_events() if e.get("event") == "worker_class_failed"]
    assert events and "no_such_module" in events[0]["error"]
    # the healthy supervisor is unaffected
    Queue("qg", connection=redis).enqueue("testjobs.record", "fine")
    wait_until(lambda: redis.hget("test:runs", "fine") == b"1", what="the healthy supervisor to work")


def test_a_preload_that_fails_to_import_is_logged_and_jobs_fail_visibly(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """, preload=("testjobs", "missing_app.jobs"))
    daemon.wait_ready({"alpha": 1})
    events = [e for e in daemon.log_events() if e.get("event") == "preload_failed"]
    assert [e["preload"] for e in events] == ["missing_app.jobs"]
    queue = Queue("qa", connection=redis)
    broken = queue.enqueue("missing_app.jobs.send", 1)
    fine = queue.enqueue("testjobs.record", "preloaded")
    wait_until(lambda: broken.get_status(refresh=True) == "failed", what="the broken job to fail")
    assert "missing_app" in broken.latest_result().exc_string
    wait_until(lambda: fine.get_status(refresh=True) == "finished", what="the good job to run")
    assert daemon.supervisor("alpha")["backoff"] == []


def test_max_jobs_recycles_workers_without_counting_it_as_a_crash(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    max_jobs = 2
    """)
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    for i in range(6):
        queue.enqueue("testjobs.record_pid", f"j{i}")
    wait_until(lambda: redis.hlen("test:pids") == 6, timeout=20, what="six jobs")
    pids = {int(p) for p in redis.hvals("test:pids")}
    assert len(pids) == 3
    sup = daemon.supervisor("alpha")
    assert sup["backoff"] == []
    assert not [e for e in daemon.log_events() if e.get("event") == "worker_crash_loop"]


def test_without_any_config_file_the_embedded_default_runs_and_says_so_first(tmp_path, redis_url, redis):
    if os.path.exists("/etc/horizond/horizond.toml"):
        import pytest

        pytest.skip("a system config exists on this machine")
    sock = str(tmp_path / "ctl.sock")
    env = child_env(REDIS_URL=redis_url, HORIZOND_SOCKET=sock)
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "horizond"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)
    try:
        Queue("default", connection=redis).enqueue("testjobs.record", "embedded")
        wait_until(lambda: redis.hget("test:runs", "embedded") == b"1", timeout=15, what="the default supervisor")
        first = (tmp_path / "log").read_text().splitlines()[0]
        assert "embedded default" in first and '"event": "embedded_config"' in first
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        log.close()
