"""What job code imports from horizond: per-job options, release, throttle.

    from horizond import job_options, options, release, throttle

    @job_options(tries=3, backoff=[10, 30, 60], max_exceptions=3, retry_until=timedelta(hours=24))
    def deliver_webhook(url, payload): ...

    queue.enqueue(deliver_webhook, url, payload, meta=options(tries=5))  # enqueue time wins

Options are read by horizond's workers (the lean one and the stock RQ classes alike, through
horizond's worker mixin); under a plain `rq worker` the decorator changes nothing and the
function runs as it is. Release and throttle work inside any job a horizond worker runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from horizond.core import jobopts

ATTRIBUTE = "_horizond_options"
THROTTLE_PREFIX = "horizond:throttle:"  # the worker sets its [redis] prefix here (worker/jobcontrol.py)


class Release(Exception):  # noqa: N818 - an instruction to the worker, not an error
    """Raised by `release()`: the worker puts the job back after `delay` seconds. It counts as
    an attempt (one of its tries) unless `spend_try` is False (a throttle's release), never as an
    exception, and the job is not failed for it while it has tries left."""

    def __init__(self, delay: float = 0, spend_try: bool = True):
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
            raise ValueError(f"release: delay must be seconds >= 0, not {delay!r}")
        super().__init__(f"released for {delay:g} s")
        self.delay = delay
        self.spend_try = spend_try


class MaxAttemptsExceeded(Exception):  # noqa: N818 - Laravel's name, which the seed's users know
    """The job asked to be released but had no tries left: it fails."""


class RetryUntilPassed(Exception):  # noqa: N818
    """The job's retry_until had passed when an attempt was about to start: it fails unrun."""


class ThrottleExceeded(Exception):  # noqa: N818
    """`throttle(..., on_limit="raise")` found no free slot within `block` seconds."""

    def __init__(self, key: str, retry_in: float):
        super().__init__(f"throttle {key!r}: over its limit; a slot frees in {retry_in:.2f} s")
        self.key = key
        self.retry_in = retry_in


def job_options(**given: Any) -> Callable:
    """Declare a job function's own policy (see core/jobopts.py for each option). The values are
    checked here, at import time, so a typo fails the deploy rather than the first job."""
    declared = jobopts.parse("decorator", 0.0, **given)

    def attach(func: Callable) -> Callable:
        setattr(func, ATTRIBUTE, declared)
        return func
    return attach


def options(**given: Any) -> dict:
    """Enqueue-time options, to pass as `meta=` (merged into a meta of your own with `|`):
    `queue.enqueue(f, meta=options(tries=5))`. They win over the decorator and the supervisor."""
    return {jobopts.META_KEY: {"options": jobopts.parse("options()", time.time(), **given).to_meta()}}


def release(delay: float = 0) -> None:
    """Put the running job back after `delay` seconds (Laravel's `$this->release($delay)`)."""
    raise Release(delay)


_TAKE = """
local clock = redis.call('TIME')  -- the server's clock: every host counts the same window
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
    return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


@contextmanager
def throttle(key: str, allow: int, every: float, block: float = 0, on_limit: str = "release",
             connection: Any = None) -> Iterator[None]:
    """At most `allow` entries into this block per `every` seconds under `key`, counted in Redis
    over every worker on every host (a sliding window: Laravel's `Redis::throttle`).

    Over the limit it waits up to `block` seconds for a slot; then, with on_limit="release" (the
    default), the job goes back until the slot frees without spending a try; with "raise" it
    raises ThrottleExceeded for the job to handle."""
    if not isinstance(key, str) or not key:
        raise ValueError("throttle: key must be a non-empty string")
    if isinstance(allow, bool) or not isinstance(allow, int) or allow < 1:
        raise ValueError(f"throttle: allow must be a whole number >= 1, not {allow!r}")
    if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
        raise ValueError(f"throttle: every must be seconds > 0, not {every!r}")
    if on_limit not in ("release", "raise"):
        raise ValueError(f"throttle: on_limit must be 'release' or 'raise', not {on_limit!r}")
    redis = connection if connection is not None else _job_connection()
    take = redis.register_script(_TAKE)
    member = uuid.uuid4().hex
    give_up = time.monotonic() + max(block, 0)
    while True:
        wait = float(take(keys=[THROTTLE_PREFIX + key], args=[every, allow, member]))
        if wait <= 0:
            break
        if time.monotonic() + wait > give_up:
            if on_limit == "raise":
                raise ThrottleExceeded(key, wait)
            raise Release(wait, spend_try=False)
        time.sleep(wait)  # until the oldest entry leaves the window
    yield


def _job_connection():
    from rq import get_current_job
    job = get_current_job()
    if job is None:
        raise RuntimeError("throttle() outside a job: pass connection=")
    return job.connection
