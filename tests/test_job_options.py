"""Per-job options (issue 18): a job's @job_options and enqueue-time options() govern its tries,
exceptions, deadline and timeout; release() and throttle() put it back without failing it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rq import Queue
from rq.job import JobStatus

from conftest import horizonctl, wait_until
from horizond import options
from horizond.core import jobopts

SUPERVISOR = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
max_processes = 2
tries = 1
"""

WORKERS = ["", 'worker_class = "rq.worker.SimpleWorker"\n']


def _config(worker_class: str) -> str:
    return SUPERVISOR + worker_class


def _attempts(redis, tag) -> list[float]:
    return [float(t) for t in redis.lrange(f"test:attempts:{tag}", 0, -1)]


def _status(job) -> str:
    return job.get_status(refresh=True)


# --- the rules (pure) -----------------------------------------------------------------

def test_bad_options_are_refused_naming_the_argument():
    for bad, named in [({"tries": 0}, "tries"), ({"backoff": [-1]}, "backoff"), ({"max_exceptions": "3"},
                       "max_exceptions"), ({"retry_until": -5}, "retry_until"), ({"tris": 3}, "tris"),
                       ({"fail_on_timeout": 1}, "fail_on_timeout"),
                       ({"retry_until": datetime(2030, 1, 1)}, "retry_until")]:
        with pytest.raises(ValueError, match=named):
            jobopts.parse("options()", 0.0, **bad)


counts = st.one_of(st.none(), st.integers(1, 50))
option_sets = st.builds(jobopts.JobOptions, tries=counts, max_exceptions=counts, timeout=counts,
                        backoff=st.one_of(st.none(), st.lists(st.integers(0, 99), min_size=1, max_size=4).map(tuple)),
                        fail_on_timeout=st.one_of(st.none(), st.booleans()))


@given(option_sets, option_sets)
def test_enqueue_time_wins_field_by_field_and_the_decorator_fills_the_rest(at_enqueue, decorator):
    merged = jobopts.merge(at_enqueue, decorator)
    for field in ("tries", "max_exceptions", "timeout", "backoff", "fail_on_timeout"):
        mine = getattr(at_enqueue, field)
        assert getattr(merged, field) == (mine if mine is not None else getattr(decorator, field))
    assert jobopts.from_meta(at_enqueue.to_meta()) == at_enqueue  # what meta stores reads back the same


@given(st.integers(1, 20), st.integers(1, 20), st.floats(0, 100), st.booleans())
def test_retries_stop_at_max_exceptions_and_at_the_deadline(max_exceptions, raised, interval, timed_out):
    opts = jobopts.JobOptions(max_exceptions=max_exceptions, retry_for=50.0, fail_on_timeout=True)
    why = jobopts.stop_retrying(opts, raised, now=1000.0, next_interval=interval, timed_out=timed_out,
                                created_at=960.0)
    expected = timed_out or raised >= max_exceptions or 1000.0 + interval > 1010.0
    assert (why is not None) == expected


# --- real workers ----------------------------------------------------------------------

@pytest.mark.parametrize("worker_class", WORKERS, ids=["lean", "stock"])
def test_max_exceptions_fails_a_job_that_still_has_tries(worker_class, start_daemon, redis):
    daemon = start_daemon(_config(worker_class))
    daemon.wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.fails_always", "maxexc")
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=15, what="the job to fail")
    # FAILED is final: a retry would have left it queued or scheduled, not failed
    assert len(_attempts(redis, "maxexc")) == 2  # tries = 5, max_exceptions = 2
    job.refresh()
    assert job.meta["horizond"]["exceptions"] == 2 and job.meta["horizond"]["stopped"].startswith("max_exceptions")
    assert job.id in Queue("qa", connection=redis).failed_job_registry.get_job_ids()
    shown = horizonctl("failed", "show", job.id, socket_path=daemon.socket).stdout
    assert "max_exceptions: the job raised 2 times" in shown and '"max_exceptions": 2' in shown


@pytest.mark.parametrize("worker_class", WORKERS, ids=["lean", "stock"])
def test_release_puts_the_job_back_after_its_delay_without_failing_it(worker_class, start_daemon, redis):
    start_daemon(_config(worker_class)).wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    job = queue.enqueue("optionjobs.releases_then_succeeds", "rel", 2)
    wait_until(lambda: _status(job) == JobStatus.FINISHED, timeout=20, what="the job to finish after 2 releases")
    at = _attempts(redis, "rel")
    assert len(at) == 3 and all(later - earlier >= 0.9 for earlier, later in zip(at, at[1:], strict=False))
    job.refresh()
    assert job.meta["horizond"]["releases"] == 2 and "exceptions" not in job.meta["horizond"]
    assert job.retries_left == 1  # tries = 4: two spent by the releases
    assert job.id not in queue.failed_job_registry.get_job_ids()


def test_a_release_with_no_tries_left_fails_the_job(start_daemon, redis):
    start_daemon(_config("")).wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.releases_then_succeeds", "norel", 9)
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=30, what="the job to run out of tries")
    assert len(_attempts(redis, "norel")) == 4  # tries = 4
    assert "MaxAttemptsExceeded" in job.latest_result().exc_string


def test_retry_until_stops_retries_that_would_start_after_the_deadline(start_daemon, redis):
    start_daemon(_config("")).wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.fails_until_deadline", "until")
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=20, what="the deadline to end the retries")
    at = _attempts(redis, "until")
    assert 1 <= len(at) <= 3 < 10 and at[-1] - job.created_at.replace(tzinfo=UTC).timestamp() < 2.5
    job.refresh()
    assert job.meta["horizond"]["stopped"].startswith("retry_until")


def test_fail_on_timeout_fails_at_once(start_daemon, redis):
    start_daemon(_config("")).wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.times_out", "tmo")
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=15, what="the 1 s timeout")
    assert len(_attempts(redis, "tmo")) == 1 and "JobTimeoutException" in job.latest_result().exc_string
    job.refresh()
    assert job.timeout == 1  # the decorator's timeout, not the supervisor's


def test_fail_on_timeout_holds_when_the_master_kills_a_job_past_its_hard_timeout(start_daemon, redis):
    daemon = start_daemon(_config(""), extra_master="hard_timeout_grace = 1\n")
    daemon.wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.ignores_its_timeout", "hard")
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=20, what="the hard timeout")
    assert len(_attempts(redis, "hard")) == 1
    assert "hard timeout" in job.latest_result().exc_string


def test_enqueue_time_options_win_over_the_decorator(start_daemon, redis):
    start_daemon(_config("")).wait_ready({"alpha": 2})
    job = Queue("qa", connection=redis).enqueue("optionjobs.fails_always", "enq", meta=options(max_exceptions=3))
    wait_until(lambda: _status(job) == JobStatus.FAILED, timeout=15, what="the job to fail")
    assert len(_attempts(redis, "enq")) == 3


def test_throttle_lets_allow_entries_per_window_across_workers_and_releases_without_spending_a_try(
        start_daemon, redis):
    start_daemon(_config("")).wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    jobs = [queue.enqueue("optionjobs.throttled", f"thr{i}") for i in range(5)]
    wait_until(lambda: all(_status(j) == JobStatus.FINISHED for j in jobs), timeout=30,
               what="5 throttled jobs (2 per 3 s)")
    entered = sorted(float(t) for t in redis.lrange("test:throttled", 0, -1))
    assert len(entered) == 5
    for i in range(len(entered) - 2):  # never 3 entries within one 3 s window
        assert entered[i + 2] - entered[i] >= 3.0 - 0.05, entered
    assert all(j.id not in queue.failed_job_registry.get_job_ids() for j in jobs)  # tries = 1, yet none failed
    assert datetime.now(UTC) - timedelta(seconds=60) < jobs[0].created_at.replace(tzinfo=UTC)
