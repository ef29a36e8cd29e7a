"""A supervisor's timeout and retry policy govern plain jobs; a job's own settings win."""

from __future__ import annotations

import math
import time
from datetime import timedelta

from rq import Queue, Retry
from rq.job import JobStatus

from conftest import wait_until

SUPERVISOR = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
timeout = 2
tries = 3
backoff = [1]
"""


def _failed(job):
    return job.get_status(refresh=True) == JobStatus.FAILED


def test_plain_job_runs_under_the_supervisor_timeout_not_rqs_180s(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR.replace("tries = 3", "tries = 1"))
    daemon.wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("testjobs.block", 30)
    assert job.timeout == 180  # what RQ stamped on it
    started = time.monotonic()
    wait_until(lambda: _failed(job), timeout=15, what="the job to time out")
    assert time.monotonic() - started < 10
    assert "JobTimeoutException" in job.latest_result().exc_string
    assert redis.hget("test:runs", "block") is None


def test_a_jobs_own_timeout_wins_over_the_supervisors(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR.replace("tries = 3", "tries = 1"))
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    longer = queue.enqueue("testjobs.sleep_then_record", 3, "longer", job_timeout=10)
    shorter = queue.enqueue("testjobs.block", 5, "shorter", job_timeout=1)
    wait_until(lambda: _failed(shorter), timeout=10, what="the 1 s job to time out")
    wait_until(lambda: longer.get_status(refresh=True) == JobStatus.FINISHED, timeout=15,
               what="the 10 s job to outlive the supervisor's 2 s")


def test_supervisor_tries_and_backoff_retry_a_plain_job_then_fail_it(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR.replace("backoff = [1]", "backoff = [2]"))
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    job = queue.enqueue("testjobs.fail", "plain")
    scores = []  # when each retry is due, as RQ's scheduled registry says
    for retry in (1, 2):
        scores.append(wait_until(lambda: (s := redis.zscore(queue.scheduled_job_registry.key, job.id)) and
                                 s not in scores and s, timeout=10, interval=0.02, what=f"retry {retry} scheduled"))
    wait_until(lambda: _failed(job), timeout=20, what="three attempts")
    attempts = [float(t) for t in redis.lrange("test:attempts:plain", 0, -1)]
    assert len(attempts) == 3 and job.id in queue.failed_job_registry.get_job_ids()
    for failed_at, due, next_try in zip(attempts, scores, attempts[1:], strict=False):
        assert_due_two_seconds_after(failed_at, due)
        # the scheduler moves it back when due, not before; it polls every second
        assert due <= next_try < due + 2.5, (due, next_try)


def assert_due_two_seconds_after(failed_at: float, due: float) -> None:
    """RQ schedules `now + backoff` cut to the whole second: due == floor(t) + 2 for the moment t
    the retry was scheduled, which is at most a few ms after the job recorded its failure. Only
    when a second boundary lies in that gap can the two differ by one; then either reading is
    accepted. A 1 s or 3 s back-off gives floor(t) + 1 or + 3, which fails."""
    gap = 0.05
    readings = {due - math.floor(failed_at), due - math.floor(failed_at + gap)}
    assert 2 in readings, f"retry due {due - failed_at:.3f} s after the failure, not 2 s (whole seconds)"


def test_a_jobs_own_retry_wins_over_the_supervisors_tries(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR)
    daemon.wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("testjobs.fail", "own", retry=Retry(max=1))
    wait_until(lambda: _failed(job), timeout=20, what="the job to fail")
    assert redis.llen("test:attempts:own") == 2


def test_delayed_jobs_run_because_a_scheduler_runs_with_the_workers(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR)
    daemon.wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue_in(timedelta(seconds=1), "testjobs.record", "later")
    assert job.get_status() == JobStatus.SCHEDULED
    wait_until(lambda: redis.hget("test:runs", "later") == b"1", timeout=10, what="the delayed job to run")
