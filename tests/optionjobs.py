"""Jobs that declare their own policy with horizond's job API (tests/test_job_options.py)."""

import time
from datetime import timedelta

from rq import get_current_job

from horizond import job_options, release, throttle


def _attempt(tag):
    job = get_current_job()
    job.connection.rpush(f"test:attempts:{tag}", time.time())
    return job.connection


@job_options(tries=5, backoff=[0], max_exceptions=2)
def fails_always(tag):
    _attempt(tag)
    raise RuntimeError(f"failing on purpose: {tag}")


@job_options(tries=4, backoff=[0])
def releases_then_succeeds(tag, releases):
    redis = _attempt(tag)
    if redis.llen(f"test:attempts:{tag}") <= releases:
        release(1)
    redis.hincrby("test:runs", tag, 1)


@job_options(tries=10, backoff=[1], retry_until=timedelta(seconds=2.5))
def fails_until_deadline(tag):
    _attempt(tag)
    raise RuntimeError("still failing")


@job_options(tries=5, backoff=[0], timeout=1, fail_on_timeout=True)
def times_out(tag):
    _attempt(tag)
    time.sleep(10)


@job_options(tries=1)
def throttled(tag):
    redis = _attempt(tag)
    with throttle("partner-api", allow=2, every=3):
        redis.rpush("test:throttled", time.time())


@job_options(tries=3, backoff=[0], timeout=1, fail_on_timeout=True)
def ignores_its_timeout(tag):
    """Blocks SIGALRM (RQ's in-worker timeout), so only the master's hard timeout ends it."""
    import signal
    _attempt(tag)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(30)
