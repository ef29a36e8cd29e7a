"""horizonctl against a real daemon through the real socket: pause, scale, restart, reload, terminate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from rq import Queue
from rq.job import JobStatus

from conftest import ROOT, alive, child_env, horizonctl, wait_until

TWO = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2

[supervisors.beta]
queues = ["qb"]
min_processes = 1
"""


def ctl(daemon, *args):
    return horizonctl(*args, socket_path=daemon.socket)


def started_at(redis, tag):
    value = redis.hget("test:start_time", tag)
    return float(value) if value else None


def test_pause_stops_new_jobs_within_a_second_lets_running_ones_finish_and_continue_resumes(start_daemon, redis):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    running = Queue("qa", connection=redis).enqueue("testjobs.mark_start", "running", 1.5)
    wait_until(lambda: started_at(redis, "running"), what="a job in flight")

    paused = ctl(daemon, "pause")
    paused_at = time.time()
    assert paused.returncode == 0, paused.stderr
    early = Queue("qb", connection=redis).enqueue("testjobs.mark_start", "early")  # may start within 1 s
    wait_until(lambda: running.get_status(refresh=True) == JobStatus.FINISHED, what="the in-flight job to finish")
    status = ctl(daemon, "status", "--json")
    assert status.returncode == 1  # Horizon's code for paused
    assert json.loads(status.stdout)["state"] == "paused"
    time.sleep(max(0.0, paused_at + 1.05 - time.time()))  # the spec's grace second
    held = [Queue(q, connection=redis).enqueue("testjobs.mark_start", f"held-{q}") for q in ("qa", "qb")]
    time.sleep(1.5)  # a window in which an unpaused idle worker would certainly have started them
    assert [started_at(redis, j.args[0]) for j in held] == [None, None], "a job started >1 s after pause"
    early_start = started_at(redis, "early")
    assert early_start is None or early_start <= paused_at + 1.0
    assert all(w["state"] == "paused" for s in daemon.status()["supervisors"] for w in s["workers"])
    held.append(early)

    resumed = ctl(daemon, "continue")
    resumed_at = time.time()
    assert resumed.returncode == 0
    wait_until(lambda: all(started_at(redis, j.args[0]) for j in held), timeout=5, what="held jobs to start")
    assert max(started_at(redis, j.args[0]) for j in held) - resumed_at < 1.0
    assert ctl(daemon, "status").returncode == 0


def test_pausing_one_supervisor_leaves_the_others_working_and_survives_a_reload(start_daemon, redis):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    assert ctl(daemon, "pause", "beta").returncode == 0
    wait_until(lambda: daemon.supervisor("beta")["workers"][0]["state"] == "paused", what="beta paused")
    Queue("qa", connection=redis).enqueue("testjobs.record", "on-alpha")
    wait_until(lambda: redis.hget("test:runs", "on-alpha") == b"1", what="alpha to keep working")

    daemon.write_config(TWO.replace("min_processes = 1", "min_processes = 2"))  # beta changes
    result = ctl(daemon, "reload")
    assert result.returncode == 0 and "changed: beta" in result.stdout, result.stdout + result.stderr
    wait_until(lambda: (s := daemon.supervisor("beta")) and s["processes"] == 2 and s["retiring"] == 0
               and all(w["state"] == "paused" for w in s["workers"]), what="beta's new workers, paused")
    assert daemon.supervisor("beta")["state"] == "paused"
    held = Queue("qb", connection=redis).enqueue("testjobs.record", "held")
    time.sleep(1.5)  # window in which a running worker would have taken it
    assert held.get_status(refresh=True) == JobStatus.QUEUED
    assert ctl(daemon, "continue", "beta").returncode == 0
    wait_until(lambda: redis.hget("test:runs", "held") == b"1", what="beta to resume")


def test_scale_pins_the_count_and_auto_returns_to_the_configured_one(start_daemon):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    result = ctl(daemon, "scale", "alpha", "4")
    assert result.returncode == 0 and "pinned at 4" in result.stdout
    daemon.wait_ready({"alpha": 4})
    assert ctl(daemon, "scale", "alpha", "0").returncode == 0
    wait_until(lambda: daemon.supervisor("alpha")["workers"] == [], what="alpha scaled to zero")
    assert ctl(daemon, "scale", "alpha", "auto").returncode == 0
    daemon.wait_ready({"alpha": 2})
    for bad in (["alpha", "-1"], ["alpha", "100000"], ["alpha", "many"]):
        refused = ctl(daemon, "scale", *bad)
        assert refused.returncode != 0 and "scale" in refused.stderr and "Traceback" not in refused.stderr
    unknown = ctl(daemon, "scale", "gamma", "3")
    assert unknown.returncode != 0 and "unknown supervisor 'gamma'" in unknown.stderr
    assert daemon.supervisor("alpha")["target"] == 2


def test_restart_replaces_every_worker_without_killing_the_job_in_flight(start_daemon, redis):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    before = {w["pid"] for w in daemon.supervisor("alpha")["workers"]}
    beta_before = {w["pid"] for w in daemon.supervisor("beta")["workers"]}
    job = Queue("qa", connection=redis).enqueue("testjobs.mark_start", "deploy", 2)
    wait_until(lambda: started_at(redis, "deploy"), what="a job in flight")
    result = ctl(daemon, "restart", "alpha")
    assert result.returncode == 0 and "alpha" in result.stdout
    wait_until(lambda: (s := daemon.supervisor("alpha")) and s["processes"] == 2 and not s["retiring"]
               and not {w["pid"] for w in s["workers"]} & before, timeout=15, what="all alpha workers replaced")
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert redis.hget("test:runs", "deploy") == b"1"
    assert {w["pid"] for w in daemon.supervisor("beta")["workers"]} == beta_before
    assert not any(alive(p) for p in before)


def test_reload_command_reports_a_refusal_and_exits_non_zero(start_daemon):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    daemon.write_config(TWO.replace("min_processes = 1", "min_processes = -1"))
    result = ctl(daemon, "reload")
    assert result.returncode != 0
    assert "reload refused" in result.stderr and "min_processes" in result.stderr
    assert daemon.supervisor("beta")["target"] == 1


def test_tables_and_their_json(start_daemon, redis):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    Queue("qb", connection=redis).enqueue("testjobs.mark_start", "shown", 3)
    wait_until(lambda: started_at(redis, "shown"), what="a busy worker")
    workers = json.loads(ctl(daemon, "workers", "--json").stdout)
    assert len(workers) == 3
    busy = [w for w in workers if w["state"] == "busy"]
    assert len(busy) == 1 and busy[0]["supervisor"] == "beta" and busy[0]["queue"] == "qb" and busy[0]["rss"] > 0
    table = ctl(daemon, "workers", "beta")
    assert table.returncode == 0 and busy[0]["job_id"] in table.stdout and "alpha" not in table.stdout
    sups = json.loads(ctl(daemon, "supervisors", "--json").stdout)
    assert [(s["name"], s["processes"], s["busy"]) for s in sups] == [("alpha", 2, 0), ("beta", 1, 1)]
    assert "alpha" in ctl(daemon, "supervisors").stdout
    assert ctl(daemon, "workers", "nope").returncode != 0


def test_terminate_wait_returns_once_the_daemon_is_gone(start_daemon, redis):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.mark_start", "last", 1)
    wait_until(lambda: started_at(redis, "last"), what="a job in flight")
    result = ctl(daemon, "terminate", "--wait")
    assert result.returncode == 0 and "stopped" in result.stdout
    assert daemon.proc.poll() == 0
    assert job.get_status(refresh=True) == JobStatus.FINISHED


def test_every_command_says_clearly_that_no_daemon_runs(tmp_path):
    for args in (["status"], ["pause"], ["scale", "a", "1"], ["restart"], ["reload"], ["terminate"], ["workers"]):
        result = subprocess.run([sys.executable, "-m", "horizond.control.ctl",
                                 "--socket", str(tmp_path / "x.sock"), *args],
                                capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=30)
        assert result.returncode == 2, args
        assert "horizond is not running" in result.stderr and "Traceback" not in result.stderr


def test_sighup_and_reload_command_agree(start_daemon):
    daemon = start_daemon(TWO)
    daemon.wait_ready({"alpha": 2, "beta": 1})
    daemon.write_config(TWO + '\n[supervisors.gamma]\nqueues = ["qg"]\n')
    daemon.signal(signal.SIGHUP)
    daemon.wait_ready({"alpha": 2, "beta": 1, "gamma": 1})
    result = ctl(daemon, "reload")
    assert result.returncode == 0 and "no supervisor changed" in result.stdout
