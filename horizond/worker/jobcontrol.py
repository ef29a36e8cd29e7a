"""Per-job options in the worker: read them before a job runs, act on them when it raises.

The rules are core/jobopts.py's; this module only reads the sources (the job's meta, the job
function's decorator), records what the master and `failed show` need in the job's meta, turns a
`release()` into RQ's own returned `Retry` (a RETRIED result, the job scheduled again: RQ's path
for "run me again later"), and stops the retries a job's options forbid before RQ's failure path
reads `job.should_retry`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from rq.job import Job, Retry
from rq.timeouts import JobTimeoutException

from horizond import jobs
from horizond.core import jobopts

log = logging.getLogger("horizond.worker")


def declared(job: Job) -> jobopts.JobOptions:
    """The job's own options: enqueue time first, then its function's decorator."""
    state = job.meta.get(jobopts.META_KEY) if isinstance(job.meta, dict) else None
    at_enqueue = jobopts.from_meta(state.get("options")) if isinstance(state, dict) else None
    try:
        decorator = getattr(job.func, jobs.ATTRIBUTE, None)
    except Exception:  # noqa: BLE001 - cannot import: the job fails RQ's way when it runs
        decorator = None
    return jobopts.merge(at_enqueue, decorator if isinstance(decorator, jobopts.JobOptions) else None)


def watch(job: Job, options: jobopts.JobOptions) -> None:
    """Before the job runs: keep its options for the failure path, note them in its meta (saved
    with the start's writes), and wrap its perform for retry_until and release()."""
    job.horizon_options = options
    if options != jobopts.JobOptions():
        state = _state(job)
        state["options"] = options.to_meta()
        job.horizon_policy_applied = True
        job.horizon_meta_changed = True
    created = job.created_at.timestamp() if job.created_at else None
    until = jobopts.deadline(options, created)
    perform = job.perform

    def perform_watched() -> Any:
        if until is not None and time.time() > until:
            raise jobs.RetryUntilPassed(f"retry_until passed {time.time() - until:.1f} s ago: not started")
        try:
            return perform()
        except jobs.Release as release:
            return _released(job, release)
    job.perform = perform_watched


def _released(job: Job, release: jobs.Release) -> Retry:
    """A release becomes RQ's returned Retry: scheduled after the delay, a RETRIED result, no
    exception. A release that spends a try needs one left; else the job fails."""
    state = _state(job)
    state["releases"] = state.get("releases", 0) + 1
    if release.spend_try:
        if not job.retries_left:
            raise jobs.MaxAttemptsExceeded(
                f"released with no tries left (after {state['releases']} releases)") from None
        job.retries_left -= 1
    return Retry(max=(job.number_of_retries or 0) + 1, interval=math.ceil(release.delay))


def after_exception(job: Job, exc_type: type | None) -> None:
    """The job raised: count it, and stop its retries where its options say so. Runs before
    RQ's failure path reads `job.should_retry` (both horizond's workers call handle_exception
    first). A job that will not run again saves the count and the reason in its meta."""
    options = getattr(job, "horizon_options", None)
    if exc_type is None or options is None or (options == jobopts.JobOptions() and not
                                               issubclass(exc_type, jobs.MaxAttemptsExceeded)):
        return  # a job without options of its own ends exactly as under RQ
    state = _state(job)
    state["exceptions"] = count = state.get("exceptions", 0) + 1
    if issubclass(exc_type, jobs.MaxAttemptsExceeded):
        why = "tries: released with no tries left"
    elif issubclass(exc_type, jobs.RetryUntilPassed):
        why = "retry_until: the deadline passed before this attempt started"
    elif job.should_retry:
        why = jobopts.stop_retrying(options, count, time.time(), job.get_retry_interval(),
                                    issubclass(exc_type, JobTimeoutException),
                                    job.created_at.timestamp() if job.created_at else None)
    else:
        why = None
    if why:
        state["stopped"] = why
        if job.retries_left:
            log.info("job not retried", extra={"event": "job_retry_stopped", "job_id": job.id, "reason": why,
                                               "retries_left": job.retries_left})
        job.retries_left = 0
    if not job.should_retry:
        job.save_meta()  # the failed job's record: `failed show` says why it stopped


def _state(job: Job) -> dict:
    if not isinstance(job.meta, dict):
        job.meta = {}
    state = job.meta.get(jobopts.META_KEY)
    if not isinstance(state, dict):
        state = job.meta[jobopts.META_KEY] = {}
    return state
