"""The daemon end to end: real master, real forked workers, real redis-server."""

from __future__ import annotations

import signal
import subprocess
import sys

from rq import Queue, Worker
from rq.job import JobStatus

from conftest import ROOT, alive, child_env, wait_until

TWO_SUPERVISORS = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 3
max_processes = 3

[supervisors.beta]
queues = ["qb", "qc"]
balance = "off"
min_processes = 2
max_processes = 2
"""


def test_runs_each_supervisor_at_its_processes_visible_to_rq(start_daemon, redis, redis_url):
    daemon = start_daemon(TWO_SUPERVISORS)
    daemon.wait_ready({"alpha": 3, "beta": 2})
    assert Worker.count(connection=redis, queue=Queue("qa", connection=redis)) == 3
    assert Worker.count(connection=redis, queue=Queue("qb", connection=redis)) == 2
    assert Worker.count(connection=redis, queue=Queue("qc", connection=redis)) == 2
    info = subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", redis_url, "--only-workers"],
                          capture_output=True, text=True, env=child_env(), cwd=ROOT)
    assert "5 workers" in info.stdout, info.stdout + info.stderr


def test_300_jobs_over_three_queues_each_run_exactly_once(start_daemon, redis):
    daemon = start_daemon(TWO_SUPERVISORS)
    daemon.wait_ready({"alpha": 3, "beta": 2})
    queues = [Queue(name, connection=redis) for name in ("qa", "qb", "qc")]
    jobs = [queues[i % 3].enqueue("testjobs.record", f"job-{i}") for i in range(300)]
    wait_until(lambda: redis.hlen("test:runs") == 300, timeout=60, what="300 jobs to run")
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs), timeout=10,
               what="every job marked finished")
    runs = {k.decode(): int(v) for k, v in redis.hgetall("test:runs").items()}
    assert runs == {f"job-{i}": 1 for i in range(300)}
    assert all(len(q) == 0 for q in queues)


def test_sigterm_lets_the_running_job_finish_and_leaves_no_process(start_daemon, redis):
    daemon = start_daemon(TWO_SUPERVISORS)
    daemon.wait_ready({"alpha": 3, "beta": 2})
    job = Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 2, "slow")
    wait_until(lambda: redis.hget("test:started", "slow"), what="the job to start")
    pids = daemon.worker_pids() | {daemon.status()["scheduler"]["pid"]}
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert redis.hget("test:runs", "slow") == b"1"
    assert not [pid for pid in pids if alive(pid)]


def test_second_sigterm_kills_the_job_which_goes_back_to_its_queue(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    tries = 2
    """)
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.block", 60, "long")
    wait_until(lambda: redis.hget("test:started", "long"), what="the job to start")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: any(e.get("event") == "stop_requested" for e in daemon.log_events()), what="stop to begin")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(20) == 0
    queue = Queue("qa", connection=redis)
    assert job.get_status(refresh=True) == JobStatus.QUEUED and job.id in queue.job_ids
    # not also counted as running (rq info, `horizonctl status`), nor held by a dead worker's record
    assert job.id not in queue.started_job_registry.get_job_ids()
    assert Worker.all(connection=redis) == []


def test_killed_job_without_tries_left_lands_in_failed_registry_with_cause(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    job = queue.enqueue("testjobs.block", 60, "long")
    wait_until(lambda: redis.hget("test:started", "long"), what="the job to start")
    daemon.signal(signal.SIGTERM)
    wait_until(lambda: any(e.get("event") == "stop_requested" for e in daemon.log_events()), what="stop to begin")
    daemon.signal(signal.SIGINT)
    assert daemon.wait_exit(20) == 0
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert job.id in queue.failed_job_registry.get_job_ids()
    assert "SIGKILL" in job.latest_result().exc_string


def test_sigkill_of_the_master_takes_every_worker_with_it(start_daemon, redis):
    daemon = start_daemon(TWO_SUPERVISORS)
    daemon.wait_ready({"alpha": 3, "beta": 2})
    Queue("qa", connection=redis).enqueue("testjobs.block", 60, "busy")
    wait_until(lambda: redis.hget("test:started", "busy"), what="a busy worker")
    pids = daemon.worker_pids() | {daemon.status()["scheduler"]["pid"]}
    assert len(pids) == 6
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(5)
    wait_until(lambda: not [p for p in pids if alive(p)], timeout=5, what="all workers gone")


def test_worker_killed_mid_job_is_replaced_and_its_job_retried_at_once(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    tries = 2
    """)
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    job = queue.enqueue("testjobs.sleep_then_record", 1, "victim")
    victim = int(wait_until(lambda: redis.hget("test:started", "victim"), what="the job to start"))
    redis.hdel("test:started", "victim")
    import os

    os.kill(victim, signal.SIGKILL)
    # retried at once (not after RQ's registry expiry): a new worker runs it to the end
    wait_until(lambda: redis.hget("test:runs", "victim") == b"1", timeout=10, what="the job to run again")
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert int(redis.hget("test:started", "victim")) != victim
    sup = daemon.supervisor("alpha")
    assert sup["processes"] == 1 and victim not in {w["pid"] for w in sup["workers"]}


def test_a_dead_workers_own_children_do_not_outlive_it(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    Queue("qa", connection=redis).enqueue("testjobs.spawn_and_block", "g")
    worker = int(wait_until(lambda: redis.hget("test:started", "g"), what="the job to start"))
    grandchild = int(redis.hget("test:grandchild", "g"))
    assert alive(grandchild)
    import os

    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(grandchild), timeout=5, what="the job's subprocess to be killed")


def test_killing_workers_that_did_work_is_not_a_crash_loop(start_daemon, redis):
    """A worker that finished a job and is then killed (OOM killer, an operator) is replaced at
    once, however often it happens; only workers that never get a job done back off."""
    import os

    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    queue = Queue("qa", connection=redis)
    for round_ in range(3):
        pid = daemon.wait_ready({"alpha": 1})["supervisors"][0]["workers"][0]["pid"]
        queue.enqueue("testjobs.record_pid", f"r{round_}")
        wait_until(lambda r=round_, p=pid: redis.hget("test:pids", f"r{r}") == str(p).encode(), what="a job done")
        wait_until(lambda: daemon.supervisor("alpha")["workers"][0]["state"] == "idle", what="the worker idle")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda p=pid: not alive(p) and any(e.get("pid") == p and e.get("event") in (
            "worker_exited", "worker_crash_loop") for e in daemon.log_events()), what="the death logged")
    deaths = [e for e in daemon.log_events() if e.get("event") in ("worker_exited", "worker_crash_loop")]
    assert [(e["event"], e["failures"]) for e in deaths] == [("worker_exited", 0)] * 3
    daemon.wait_ready({"alpha": 1})
