"""Job functions for the RQ-behaviour tests of the lean worker (tests/test_lean_worker.py)."""

import json
import time

from rq import Retry, get_current_job
from rq.worker import Worker


def _redis():
    return get_current_job().connection


def add(a, b):
    return a + b


def boom(tag):
    _redis().incr(f"lean:runs:{tag}")
    raise ValueError(f"boom {tag}")


def flaky(tag, fail_times):
    """Fails its first `fail_times` runs."""
    runs = _redis().incr(f"lean:runs:{tag}")
    if runs <= fail_times:
        raise RuntimeError(f"flaky {tag} run {runs}")
    return runs


def ask_retry(tag):
    """Returns a Retry on its first run (RQ reschedules it), a value on the second."""
    runs = _redis().incr(f"lean:runs:{tag}")
    return Retry(max=1) if runs == 1 else f"done after {runs}"


def slow(seconds):
    time.sleep(seconds)
    return "late"


def count(tag):
    return _redis().incr(f"lean:runs:{tag}")


def keep_meta(tag):
    job = get_current_job()
    job.meta["progress"] = 100
    job.save_meta()
    return tag


def observe():
    """What RQ tools see while this job runs: its status, the started registry, the worker."""
    job = get_current_job()
    conn = job.connection
    workers = Worker.all(connection=conn)
    seen = {
        "status": job.__class__.fetch(job.id, connection=conn).get_status(),
        "in_started_registry": job.id in job.started_job_registry.get_job_ids(),
        "workers": [(w.get_state(), w.get_current_job_id() == job.id) for w in workers],
        "current_job_is_me": get_current_job().id == job.id,
        "queue_intermediate": conn.llen(f"rq:queue:{job.origin}:intermediate"),
    }
    conn.set("lean:observed", json.dumps(seen))
    return "seen"


def on_success(job, connection, result, *args, **kwargs):
    connection.set(f"lean:success_cb:{job.id}", repr(result))


def on_failure(job, connection, exc_type, exc_value, tb):
    connection.set(f"lean:failure_cb:{job.id}", exc_type.__name__)


def hold(tag):
    """Runs until the test has acted on it (lean:go:TAG set), so the test can cancel or delete it mid-run."""
    conn = _redis()
    conn.set(f"lean:running:{tag}", 1)
    deadline = time.monotonic() + 10
    while not conn.exists(f"lean:go:{tag}") and time.monotonic() < deadline:
        time.sleep(0.01)
    conn.incr(f"lean:runs:{tag}")
    return tag


def fail():
    """Raises without touching Redis: a failing no-op, for command counts."""
    raise ValueError("fail")


def suspend_workers():
    """`rq suspend` from inside a job: the next job, taken with this one's end, must not start."""
    from rq.suspension import suspend

    suspend(_redis())
    return "suspended"
