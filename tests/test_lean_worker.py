"""The lean worker keeps RQ's behaviour: the same scenarios run under RQ's stock SimpleWorker,
under the bare LeanWorker and under the class horizond forks (LeanWorker with horizond's mixin:
pause gate, state reports, job policy), each in a forked burst worker against a real
redis-server, must leave Redis in the same end state (what rq info, rq-dashboard and
job.get_status() read). Each scenario also asserts that end state outright, so a fault shared
by all of them would fail too.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from redis import Redis
from rq import Callback, Queue, Repeat, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from horizond.core.config import SupervisorConfig
from horizond.worker import dequeue
from horizond.worker.channel import StateWriter
from horizond.worker.leanworker import LeanWorker
from horizond.worker.rqworker import HorizonLeanWorker

CLASSES = {"stock": SimpleWorker, "lean": LeanWorker, "horizond": HorizonLeanWorker}


def run_burst(redis_url: str, worker_class: type, name: str, queues=("default",), scheduler=False) -> int:
    """A real worker process: fork, work the queues until empty, exit."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            conn = Redis.from_url(redis_url)
            worker = worker_class(list(queues), connection=conn, name=name)
            if issubclass(worker_class, HorizonLeanWorker):  # as horizond's worker.py sets it up
                ours, _master_end = socket.socketpair()
                reporter = StateWriter(ours.detach())
                dequeue.GATE = dequeue.Gate(reporter.fd, reporter, paused=False)
                worker.horizon_attach(reporter, SupervisorConfig("t", queues=tuple(queues), memory=4096))
            worker.work(burst=True, logging_level="WARNING", with_scheduler=scheduler)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def job_state(redis: Redis, job_id: str, queue: str = "default") -> dict:
    """Everything about a job that RQ's tools show, without ids and timestamps."""
    registries = {"finished": FinishedJobRegistry, "failed": FailedJobRegistry, "started": StartedJobRegistry,
                  "deferred": DeferredJobRegistry, "scheduled": ScheduledJobRegistry}
    where = sorted(n for n, r in registries.items() if job_id in r(queue, connection=redis).get_job_ids())
    ttl = redis.ttl(f"rq:job:{job_id}")
    if ttl == -2:
        return {"exists": False, "registries": where}
    job = Job.fetch(job_id, connection=redis)
    latest = job.latest_result()
    return {
        "exists": True, "status": job.get_status(), "registries": where,
        "ttl": "none" if ttl == -1 else "expires",
        "result_type": latest.type.name if latest else None,
        "return_value": latest.return_value if latest else None,
        "exc_last_line": latest.exc_string.strip().splitlines()[-1] if latest and latest.exc_string else None,
        "results": len(job.results()), "retries_left": job.retries_left, "meta": job.get_meta(),
        "started": job.started_at is not None, "ended": job.ended_at is not None,
        "worker_name_set": bool(job.worker_name),
    }


def worker_state(redis: Redis, name: str) -> dict:
    raw = {k.decode(): v.decode() for k, v in redis.hgetall(f"rq:worker:{name}").items()}
    return {"successful": int(raw.get("successful_job_count", 0)), "failed": int(raw.get("failed_job_count", 0)),
            "worked": float(raw.get("total_working_time", 0)) > 0, "current_job": raw.get("current_job"),
            "registered": name.encode() in {w.split(b":")[-1] for w in redis.smembers("rq:workers")}}


def leftovers(redis: Redis) -> dict:
    """Bookkeeping that must be gone once every job is done."""
    return {"wip": sorted(k.decode() for k in redis.scan_iter("rq:wip:*") if redis.zcard(k)),
            "executions": sorted(k.decode() for k in redis.scan_iter("rq:execution:*")),
            "intermediate": sorted(k.decode() for k in redis.scan_iter("rq:queue:*:intermediate") if redis.llen(k))}


def scenario(kind: str, redis: Redis, redis_url: str, enqueue, queues=("default",), scheduler=False) -> dict:
    redis.flushall()
    jobs = enqueue(Queue("default", connection=redis))
    assert run_burst(redis_url, CLASSES[kind], f"w-{kind}", queues, scheduler) == 0
    return {"jobs": {tag: job_state(redis, job.id) for tag, job in jobs.items()},
            "worker": worker_state(redis, f"w-{kind}"), "leftovers": leftovers(redis),
            "runs": {k.decode(): int(redis.get(k)) for k in sorted(redis.scan_iter("lean:runs:*"))},
            "callbacks": sorted((k.decode().split(":")[1], redis.get(k).decode())
                                for k in redis.scan_iter("lean:*_cb:*"))}


def both(redis, redis_url, enqueue, **options) -> dict:
    """Stock, lean and horizond's class end in the same state; that state is returned."""
    stock = scenario("stock", redis, redis_url, enqueue, **options)
    for kind in ("lean", "horizond"):
        assert scenario(kind, redis, redis_url, enqueue, **options) == stock, kind
    return stock


def test_success_results_and_registries(redis, redis_url):
    got = both(redis, redis_url, lambda q: {
        "plain": q.enqueue("leanjobs.add", 2, 3),
        "ttl0": q.enqueue("leanjobs.add", 1, 1, result_ttl=0),
        "forever": q.enqueue("leanjobs.add", 4, 4, result_ttl=-1),
        "meta": q.enqueue("leanjobs.keep_meta", "m", meta={"owner": "me"}),
    })
    plain = got["jobs"]["plain"]
    assert (plain["status"], plain["registries"], plain["return_value"], plain["ttl"]) == \
        (JobStatus.FINISHED, ["finished"], 5, "expires")
    assert got["jobs"]["ttl0"] == {"exists": False, "registries": []}
    assert got["jobs"]["forever"]["ttl"] == "none" and got["jobs"]["forever"]["return_value"] == 8
    assert got["jobs"]["meta"]["meta"] == {"owner": "me", "progress": 100}
    assert got["worker"] == {"successful": 4, "failed": 0, "worked": True, "current_job": None, "registered": False}
    assert got["leftovers"] == {"wip": [], "executions": [], "intermediate": []}


def test_failures_retries_and_callbacks(redis, redis_url):
    got = both(redis, redis_url, lambda q: {
        "boom": q.enqueue("leanjobs.boom", "b", on_failure=Callback("leanjobs.on_failure")),
        "retried_ok": q.enqueue("leanjobs.flaky", "f", 2, retry=Retry(max=2)),
        "retried_out": q.enqueue("leanjobs.flaky", "g", 5, retry=Retry(max=2)),
        "cb": q.enqueue("leanjobs.add", 1, 2, on_success=Callback("leanjobs.on_success")),
    })
    jobs = got["jobs"]
    assert jobs["boom"]["status"] == JobStatus.FAILED and jobs["boom"]["registries"] == ["failed"]
    assert jobs["boom"]["exc_last_line"] == "ValueError: boom b"
    assert jobs["retried_ok"]["status"] == JobStatus.FINISHED and jobs["retried_ok"]["return_value"] == 3
    assert jobs["retried_out"]["status"] == JobStatus.FAILED and jobs["retried_out"]["retries_left"] == 0
    assert got["runs"] == {"lean:runs:b": 1, "lean:runs:f": 3, "lean:runs:g": 3}
    assert [name for name, _ in got["callbacks"]] == ["failure_cb", "success_cb"]
    assert ("success_cb", "3") in got["callbacks"] and ("failure_cb", "ValueError") in got["callbacks"]
    assert got["worker"]["successful"] == 2 and got["worker"]["failed"] == 6
    assert got["leftovers"] == {"wip": [], "executions": [], "intermediate": []}


def test_dependencies_run_after_their_parent(redis, redis_url):
    def enqueue(q):
        parent = q.enqueue("leanjobs.count", "parent")
        child = q.enqueue("leanjobs.count", "child", depends_on=parent)
        grandchild = q.enqueue("leanjobs.count", "grandchild", depends_on=child)
        orphan = q.enqueue("leanjobs.count", "orphan", depends_on=q.enqueue("leanjobs.boom", "x"))
        return {"parent": parent, "child": child, "grandchild": grandchild, "orphan": orphan}
    got = both(redis, redis_url, enqueue)
    for tag in ("parent", "child", "grandchild"):
        assert got["jobs"][tag]["status"] == JobStatus.FINISHED, tag
    assert got["jobs"]["orphan"]["status"] == JobStatus.DEFERRED and got["jobs"]["orphan"]["registries"] == ["deferred"]
    assert "lean:runs:orphan" not in got["runs"]


def test_timeouts_fail_the_job_and_the_worker_goes_on(redis, redis_url):
    got = both(redis, redis_url, lambda q: {
        "slow": q.enqueue("leanjobs.slow", 5, job_timeout=1),
        "after": q.enqueue("leanjobs.add", 1, 1),
    })
    assert got["jobs"]["slow"]["status"] == JobStatus.FAILED
    assert "JobTimeoutException" in got["jobs"]["slow"]["exc_last_line"]
    assert got["jobs"]["after"]["return_value"] == 2


def test_a_returned_retry_and_repeats(redis, redis_url):
    got = both(redis, redis_url, lambda q: {
        "asks": q.enqueue("leanjobs.ask_retry", "r"),
        "repeats": q.enqueue("leanjobs.count", "rep", repeat=Repeat(times=2)),
    }, scheduler=True)
    assert got["jobs"]["asks"]["return_value"] == "done after 2"
    assert got["runs"]["lean:runs:rep"] == 3 and got["jobs"]["repeats"]["results"] == 3


@pytest.mark.parametrize("kind", list(CLASSES))
def test_what_tools_see_while_a_job_runs(kind, redis, redis_url):
    redis.flushall()
    Queue("default", connection=redis).enqueue("leanjobs.observe")
    assert run_burst(redis_url, CLASSES[kind], f"w-{kind}") == 0
    seen = json.loads(redis.get("lean:observed"))
    assert seen == {"status": "started", "in_started_registry": True, "workers": [["busy", True]],
                    "current_job_is_me": True, "queue_intermediate": 0}


def test_heartbeats_are_not_written_per_job(redis, redis_url):
    """The point of the lean path: far fewer commands for the same end state."""
    counts = {}
    for kind in ("stock", "lean"):
        redis.flushall()
        queue = Queue("default", connection=redis)
        queue.enqueue_many([Queue.prepare_data("leanjobs.add", (1, 2)) for _ in range(200)])
        redis.config_resetstat()
        assert run_burst(redis_url, CLASSES[kind], f"w-{kind}") == 0
        stats = redis.info("commandstats")
        counts[kind] = sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_")) / 200
        assert FinishedJobRegistry("default", connection=redis).count == 200
    assert counts["lean"] <= 29 < counts["stock"], counts  # 28 a job: tests/test_lean_pipelined.py pins each path


def test_rq_suspend_still_stops_the_lean_worker(redis, redis_url):
    redis.flushall()
    queue = Queue("default", connection=redis)
    job = queue.enqueue("leanjobs.add", 1, 1)
    redis.set("rq:suspended", 1)
    started = time.monotonic()
    assert run_burst(redis_url, LeanWorker, "w-lean") == 0  # burst + suspended: RQ exits at once
    assert time.monotonic() - started < 10
    assert job.get_status(refresh=True) == JobStatus.QUEUED
