"""Job policy and crash-loop back-off: pure rules, tested exhaustively."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from horizond.core import policy, restarts


def test_rqs_stamped_default_means_not_set():
    assert policy.job_timeout(180, 2) == 2
    assert policy.job_timeout(None, 2) == 2


@given(st.integers(min_value=-1, max_value=10_000).filter(lambda t: t != 180), st.integers(1, 3600))
def test_any_other_job_timeout_is_kept(own, supervisor):
    assert policy.job_timeout(own, supervisor) == own


def test_a_jobs_own_retry_wins():
    rule = policy.retry_rule(1, [5], tries=5, backoff=(10,))
    assert rule == policy.RetryRule(1, (5,))
    # an exhausted Retry of the job's own stays exhausted, the supervisor adds none
    assert policy.retry_rule(0, [5], tries=5, backoff=(10,)).retries_left == 0


def test_one_try_means_no_retry():
    assert policy.retry_rule(None, None, tries=1, backoff=(10,)) is None


def _intervals_in_order(rule):
    """The waits RQ will apply, retry after retry, with its own indexing."""
    waits = []
    left = rule.retries_left
    while left > 0:
        waits.append(policy.retry_interval(policy.RetryRule(left, rule.intervals)))
        left -= 1
    return waits


def test_backoff_list_is_walked_from_its_first_value_and_its_last_repeats():
    assert _intervals_in_order(policy.retry_rule(None, None, 3, (10, 30, 60))) == [10, 30]
    assert _intervals_in_order(policy.retry_rule(None, None, 5, (10, 30))) == [10, 30, 30, 30]
    assert _intervals_in_order(policy.retry_rule(None, None, 3, (7,))) == [7, 7]


@given(st.integers(2, 20), st.lists(st.integers(0, 600), min_size=1, max_size=8))
def test_supervisor_rule_gives_one_wait_per_retry(tries, backoff):
    rule = policy.retry_rule(None, None, tries, tuple(backoff))
    waits = _intervals_in_order(rule)
    assert len(waits) == tries - 1
    expected = (backoff + [backoff[-1]] * tries)[: tries - 1]
    assert waits == expected


def test_rq_computes_the_same_waits_as_we_do():
    from redis import Redis
    from rq.job import Job

    rule = policy.retry_rule(None, None, 4, (10, 30))
    job = Job(connection=Redis(port=1))  # never connects: get_retry_interval is pure
    job.retries_left, job.retry_intervals = rule.retries_left, list(rule.intervals)
    seen = []
    while job.retries_left:
        seen.append(job.get_retry_interval())
        job.retries_left -= 1
    assert seen == _intervals_in_order(rule) == [10, 30, 30]


# --- restarts -----------------------------------------------------------------------


def test_first_crash_restarts_at_once_then_doubling_to_a_minute():
    assert [restarts.delay_for(n) for n in range(1, 10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 100), st.booleans()), max_size=30))
def test_backoff_never_exceeds_a_minute_and_a_clean_exit_clears_it(exits):
    health, now = restarts.SlotHealth(), 1000.0
    for failed, lived, worked in exits:
        before = health.failures
        health = restarts.after_exit(health, failed=failed, lived=lived, now=now, how="x", worked=worked)
        assert 0 <= health.not_before - now <= restarts.MAX_DELAY
        if not failed or lived >= restarts.STABLE_AFTER or worked:
            assert health.failures == 0 and health.ready(now)
        else:
            assert health.failures == before + 1
        now = health.not_before + 1


def test_a_worker_that_finished_a_job_is_replaced_at_once_however_often_it_is_killed():
    health, now = restarts.SlotHealth(), 0.0
    for _ in range(10):
        health = restarts.after_exit(health, failed=True, lived=2.0, now=now, how="killed by SIGKILL", worked=True)
        assert health.ready(now) and not health.backing_off
        now += 2.0


def test_a_crash_loop_slows_down():
    health, now, delays = restarts.SlotHealth(), 0.0, []
    for _ in range(6):
        health = restarts.after_exit(health, failed=True, lived=0.1, now=now, how="exit code 3")
        delays.append(health.not_before - now)
        now = health.not_before
    assert delays == [0, 1, 2, 4, 8, 16]
    assert health.backing_off
