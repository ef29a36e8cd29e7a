"""Job policy: which timeout and retry rule govern a job on a given supervisor.

Pure, shared by the worker (before it runs a job) and the master (when it must
settle the job of a worker that died), so both apply exactly the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

# RQ writes Queue.DEFAULT_TIMEOUT into every job enqueued without a timeout, so
# "no timeout given" is indistinguishable from "exactly 180 s". We read 180 as
# "not set": the supervisor's timeout then applies. Documented in the README.
RQ_DEFAULT_TIMEOUT = 180


@dataclass(frozen=True)
class RetryRule:
    retries_left: int
    intervals: tuple[int, ...]


def job_timeout(job_timeout: int | float | None, supervisor_timeout: int) -> int | float:
    """The timeout a job runs under: its own, unless it only carries RQ's stamp.

    A timeout of -1 is RQ's "never time out" and is kept as the job asked.
    """
    if job_timeout is None or job_timeout == RQ_DEFAULT_TIMEOUT:
        return supervisor_timeout
    return job_timeout


def retry_rule(
    job_retries_left: int | None,
    job_intervals: list[int] | tuple[int, ...] | None,
    tries: int,
    backoff: tuple[int, ...],
) -> RetryRule | None:
    """The retry rule for a job: its own Retry wins; else the supervisor's tries/backoff.

    None means "no retries": the first failure is final.
    """
    if job_retries_left is not None:
        return RetryRule(job_retries_left, tuple(job_intervals or (0,)))
    if tries <= 1:
        return None
    retries = tries - 1
    steps = tuple(backoff) or (0,)
    # One interval per retry, the last value repeating (Horizon's reading of a list);
    # RQ's own indexing then walks it from the first value.
    padded = steps[:retries] + (steps[-1],) * max(0, retries - len(steps))
    return RetryRule(retries, padded)


def retry_interval(rule: RetryRule) -> int:
    """Seconds to wait before the next attempt, following RQ's own indexing.

    RQ uses intervals[len - retries_left] (clamped at 0); retry_rule pads the
    supervisor's list to one value per retry, so backoff [10, 30] with tries = 4
    waits 10, 30, 30.
    """
    if rule.retries_left <= 0:
        return 0
    index = max(len(rule.intervals) - rule.retries_left, 0)
    return rule.intervals[min(index, len(rule.intervals) - 1)]
