"""Jobs for tests/test_breakers.py: a partner call that fails while the test says it is down."""

import time

from rq import get_current_job


class PartnerDown(ConnectionError):
    pass


def call_partner(tag):
    job = get_current_job()
    redis = job.connection
    redis.rpush("test:partner:attempts", f"{time.time()}:{tag}")
    if redis.exists("test:partner:down"):
        raise PartnerDown("partner API is down")
    redis.rpush("test:partner:done", tag)


def other(tag):
    get_current_job().connection.rpush("test:other:done", tag)


def wait_for_release(tag):
    """Says it started, then runs until the test pushes to test:release (at most 30 s)."""
    redis = get_current_job().connection
    redis.rpush("test:other:started", tag)
    redis.blpop("test:release", 30)
    redis.rpush("test:other:done", tag)
