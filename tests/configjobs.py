"""Jobs for tests/test_adversarial_config.py (imported by workers through [app] paths)."""

import os
import signal
import time

from rq import get_current_job


def _redis():
    return get_current_job().connection


def probe(tag):
    """Record the time limit the worker armed for this job (RQ's alarm(2) is ITIMER_REAL), and
    how far ahead the started registry keeps it (what Redis was asked to keep)."""
    from rq.registry import StartedJobRegistry

    remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    job = get_current_job()
    _redis().hset("cfg:alarm", tag, remaining)
    registry = StartedJobRegistry(job.origin, connection=_redis())
    kept = max(score for _, score in _redis().zrange(registry.key, 0, -1, withscores=True))
    _redis().hset("cfg:kept", tag, kept - time.time())
    _redis().hincrby("cfg:runs", tag, 1)


def fail_once(tag):
    """Fail the first attempt (recording when), succeed on any later one."""
    _redis().rpush(f"cfg:attempts:{tag}", time.time())
    if _redis().llen(f"cfg:attempts:{tag}") == 1:
        raise RuntimeError(f"failing the first attempt on purpose: {tag}")


def exit_once(tag):
    """End the worker's process mid-job on the first attempt (the master settles the job)."""
    _redis().rpush(f"cfg:attempts:{tag}", time.time())
    if _redis().llen(f"cfg:attempts:{tag}") == 1:
        os._exit(0)
