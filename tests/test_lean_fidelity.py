"""The lean worker where it once parted from RQ (issue 14): idle liveness after every path,
jobs canceled or deleted while they run, dependents, custom job classes, logging, `rq suspend`.

Each case runs under RQ's stock SimpleWorker too, in a real forked worker against a real
redis-server, and must leave the same end state (see test_lean_worker.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest
from redis import Redis
from rq import Queue, Repeat, Retry
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.suspension import resume, suspend
from rq.utils import now

from conftest import wait_until
from horizond.worker.leanbatch import Batches
from horizond.worker.leanworker import LeanWorker
from test_lean_worker import CLASSES, both

JOB_TIMEOUT = 30


def _act_while_running(redis: Redis, tag: str, action) -> threading.Thread:
    """Once the job `tag` runs, do `action` to it, then let it finish."""
    def run():
        wait_until(lambda: redis.exists(f"lean:running:{tag}"), what=f"{tag} to run")
        action()
        redis.set(f"lean:go:{tag}", 1)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_parent_canceled_while_it_runs_leaves_its_dependents_deferred(redis, redis_url):
    def enqueue(q):
        parent = q.enqueue("leanjobs.hold", "parent")
        child = q.enqueue("leanjobs.count", "child", depends_on=parent)
        grandchild = q.enqueue("leanjobs.count", "grandchild", depends_on=child)
        _act_while_running(redis, "parent", lambda: Job.fetch(parent.id, connection=redis).cancel())
        return {"parent": parent, "child": child, "grandchild": grandchild}
    got = both(redis, redis_url, enqueue)
    assert got["jobs"]["child"]["status"] == JobStatus.DEFERRED
    assert got["jobs"]["grandchild"]["status"] == JobStatus.DEFERRED
    assert "lean:runs:child" not in got["runs"]


def test_a_job_deleted_while_it_runs_is_gone_as_under_rq(redis, redis_url):
    def enqueue(q):
        doomed = q.enqueue("leanjobs.hold", "doomed")
        after = q.enqueue("leanjobs.add", 1, 1)
        _act_while_running(redis, "doomed", lambda: Job.fetch(doomed.id, connection=redis).delete())
        return {"doomed": doomed, "after": after}
    got = both(redis, redis_url, enqueue)
    assert got["jobs"]["after"]["return_value"] == 2


def test_the_success_script_refuses_a_job_with_dependents_or_not_started(redis):
    """The guard that sends such jobs down RQ's own (atomic) success path."""
    redis.flushall()
    batches = Batches(redis)
    keys = ["rq:job:p", "rq:job:p:dependents"]

    def try_success():
        pipe = batches.recorder()
        pipe.hset("rq:job:p", "status", "finished")
        pipe.set("marker", 1)
        return batches.success(keys, pipe)

    redis.hset("rq:job:p", "status", "started")
    redis.sadd("rq:job:p:dependents", "c")
    assert not try_success() and redis.hget("rq:job:p", "status") == b"started" and not redis.exists("marker")
    redis.delete("rq:job:p:dependents")
    redis.hset("rq:job:p", "status", "canceled")
    assert not try_success() and redis.hget("rq:job:p", "status") == b"canceled"
    redis.hset("rq:job:p", "status", "started")
    assert try_success() and redis.hget("rq:job:p", "status") == b"finished" and redis.exists("marker")


def _idle_worker(redis_url: str, name: str, enqueue) -> int:
    """A non-burst lean worker in a child process; returns its pid once it is back to idle."""
    conn = Redis.from_url(redis_url)
    conn.flushall()
    enqueue(Queue("default", connection=conn))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            LeanWorker(["default"], connection=Redis.from_url(redis_url), name=name).work(
                logging_level="WARNING")
        finally:
            os._exit(0)
    return pid


@pytest.mark.parametrize("path", ["failure", "result_ttl=0", "returned Retry", "repeat"])
def test_an_idle_worker_keeps_rq_s_worker_ttl_after_every_path(redis, redis_url, path):
    enqueue = {
        "failure": lambda q: q.enqueue("leanjobs.boom", "b", job_timeout=JOB_TIMEOUT),
        "result_ttl=0": lambda q: q.enqueue("leanjobs.add", 1, 1, result_ttl=0, job_timeout=JOB_TIMEOUT),
        "returned Retry": lambda q: q.enqueue("leanjobs.ask_retry", "r", job_timeout=JOB_TIMEOUT),
        "repeat": lambda q: q.enqueue("leanjobs.count", "rep", repeat=Repeat(times=1), job_timeout=JOB_TIMEOUT),
    }[path]
    pid = _idle_worker(redis_url, "w-idle", enqueue)
    try:
        key = "rq:worker:w-idle"
        wait_until(lambda: redis.hget(key, "successful_job_count") or redis.hget(key, "failed_job_count"),
                   what="the first job to be done")
        wait_until(lambda: redis.hget(key, "state") == b"idle", what="the worker to be idle")
        # RQ's idle TTL (worker_ttl + 60 = 480 s), not the job's (timeout + 60 = 90 s)
        assert redis.ttl(key) > JOB_TIMEOUT + 60, redis.ttl(key)
        assert {b"birth", b"queues", b"pid", b"hostname"} <= set(redis.hkeys(key))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_no_job_starts_after_rq_suspend_returns(redis, redis_url):
    pid = _idle_worker(redis_url, "w-susp", lambda q: q.enqueue_many(
        [Queue.prepare_data("leanjobs.slow", (0.05,)) for _ in range(200)]))
    try:
        queue = Queue("default", connection=redis)
        wait_until(lambda: queue.finished_job_registry.count >= 5, what="jobs to flow")
        suspend(redis)
        returned = now()
        time.sleep(1.5)  # the window in which the lean worker used to go on starting jobs
        started = [j.started_at for j in Job.fetch_many(queue.finished_job_registry.get_job_ids()
                                                         + queue.started_job_registry.get_job_ids(),
                                                         connection=redis) if j and j.started_at]
        assert started and max(started) <= returned, (max(started), returned)
        left = queue.count
        resume(redis)
        wait_until(lambda: queue.count < left, what="jobs to flow again after rq resume")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class RecordingJob(Job):
    """A job class whose success hook the lean path must not skip."""

    def _handle_success(self, result_ttl, pipeline, *args, **kwargs):
        pipeline.incr("lean:custom_success")
        return super()._handle_success(result_ttl, pipeline, *args, **kwargs)


def test_a_job_class_that_overrides_success_is_honoured_and_said(redis, caplog):
    redis.flushall()
    queue = Queue("default", connection=redis, job_class=RecordingJob)
    job = queue.enqueue("leanjobs.add", 2, 2)
    with caplog.at_level(logging.INFO, logger="rq.worker"):
        LeanWorker([queue], connection=redis, job_class=RecordingJob).work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.return_value() == 4
    assert redis.get("lean:custom_success") == b"1"
    assert "RecordingJob overrides _handle_success: its jobs take RQ's own paths" in caplog.text


@pytest.mark.parametrize("kind", ["stock", "lean"])
@pytest.mark.parametrize("describe", [True, False])
def test_rq_s_info_lines_and_logging_options(redis, caplog, kind, describe):
    redis.flushall()
    queue = Queue("default", connection=redis)
    job = queue.enqueue("leanjobs.add", 1, 2, description="adds one and two")
    worker = CLASSES[kind]([queue], connection=redis, log_job_description=describe)
    with caplog.at_level(logging.INFO, logger="rq.worker"):
        worker.work(burst=True)
    shown = "adds one and two" if describe else job.id
    assert f"default: {shown}" in caplog.text
    assert f"Successfully completed {shown} job" in caplog.text if describe else \
        f"Successfully completed job {job.id} in" in caplog.text
    assert f"Job OK ({job.id})" in caplog.text
    assert f"job {job.id} result is kept for 500 seconds" in caplog.text


def test_failures_scheduled_retries_and_rate_limits_end_as_under_rq(redis, redis_url):
    """The lean failure and result_ttl=0 paths, next to RQ's own."""
    def enqueue(q):
        limit = RateLimit("lean-key", concurrency=1)
        return {
            "scheduled": q.enqueue("leanjobs.boom", "s", retry=Retry(max=1, interval=600)),
            "failed": q.enqueue("leanjobs.boom", "f", failure_ttl=300),
            "limited_fails": q.enqueue("leanjobs.boom", "l", rate_limit=limit),
            "limited_ttl0": q.enqueue("leanjobs.count", "t", rate_limit=limit, result_ttl=0),
            "limited_last": q.enqueue("leanjobs.count", "z", rate_limit=limit),
        }
    got = both(redis, redis_url, enqueue)
    jobs = got["jobs"]
    assert jobs["scheduled"]["status"] == JobStatus.SCHEDULED and jobs["scheduled"]["registries"] == ["scheduled"]
    assert jobs["scheduled"]["retries_left"] == 0
    assert jobs["failed"]["status"] == JobStatus.FAILED and jobs["failed"]["registries"] == ["failed"]
    # each rate-limited job freed its one slot for the next, whatever its end
    assert jobs["limited_fails"]["status"] == JobStatus.FAILED
    assert jobs["limited_ttl0"] == {"exists": False, "registries": []}
    assert jobs["limited_last"]["status"] == JobStatus.FINISHED
    assert got["runs"] == {"lean:runs:f": 1, "lean:runs:l": 1, "lean:runs:s": 1, "lean:runs:t": 1,
                           "lean:runs:z": 1}
    assert RateLimitRegistry("lean-key", connection=redis).get_allowed_job_count() == 0
    assert got["worker"]["failed"] == 3 and got["worker"]["successful"] == 2
