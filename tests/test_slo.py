"""Service levels through the real daemon: real workers run jobs, the levels read back right.

Latencies are checked against the truth RQ itself recorded for each job (ended_at - enqueued_at),
within the sketch's bucket error; failures and late jobs move the success rate, the error budget,
health and /metrics.
"""

from __future__ import annotations

import json
import math
import time

from rq import Queue
from rq.job import Job, JobStatus

from conftest import free_port, horizonctl, sample, scrape, wait_until
from horizond.core import sketch, slo
from horizond.observe.slostore import slice_key

TOLERANCE = 0.002  # s: RQ stores times to the microsecond; the worker sums two rounded spans


def ctl(daemon, *args):
    return horizonctl(*args, socket_path=daemon.socket)


def slo_row(daemon, queue: str) -> dict | None:
    result = ctl(daemon, "slo", "--json")
    rows = json.loads(result.stdout)["queues"] if result.stdout else []
    return next((r for r in rows if r["queue"] == queue), None)


def nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


def close(got, exact) -> bool:
    return abs(got - exact) <= sketch.BUCKET_ERROR * exact + TOLERANCE


def health(daemon) -> dict:
    result = json.loads(ctl(daemon, "health", "--json").stdout)
    return {i["name"]: i for i in result["indicators"]} | {"status": result["status"]}


def one_job_under_a_level(start_daemon, redis, queue: str, **start):
    """A master with one worker on `queue` under a loose level, after one job of it has finished."""
    daemon = start_daemon(f"""
    [slo.{queue}]
    throughput = 10
    max_latency = 30
    success_rate = 90

    [supervisors.alpha]
    queues = ["{queue}"]
    min_processes = 1
    max_processes = 1
    """, **start)
    daemon.wait_ready({"alpha": 1})
    job = Queue(queue, connection=redis).enqueue("testjobs.record", queue)
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, what="the job")
    return daemon


def test_latency_percentiles_late_jobs_and_prometheus(start_daemon, redis):
    port = free_port()
    daemon = start_daemon(f"""
    [metrics]
    listen = "127.0.0.1:{port}"

    [slo.lat]
    throughput = 60
    max_latency = 1.0
    success_rate = 80
    window = 300

    [supervisors.alpha]
    queues = ["lat"]
    min_processes = 6
    max_processes = 6
    """)
    daemon.wait_ready({"alpha": 6})
    queue = Queue("lat", connection=redis)
    jobs = [queue.enqueue("testjobs.block", 0.05, f"s{i}") for i in range(4)]
    jobs += [queue.enqueue("testjobs.block", 1.4, f"l{i}") for i in range(2)]
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs), timeout=20,
               what="the jobs to finish")
    truth = []
    for job in jobs:
        job = Job.fetch(job.id, connection=redis)
        truth.append((job.ended_at - job.enqueued_at).total_seconds())
    row = wait_until(lambda: (r := slo_row(daemon, "lat")) and r["jobs"] == 6 and r, timeout=10,
                     what="the six jobs in the level")
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        assert close(row["latency"][name], nearest_rank(truth, q)), (name, row["latency"], sorted(truth))
    late = sum(1 for t in truth if t > 1.0)
    assert late == 2 and row["over_max_latency"] == round(late / 6, 6)
    assert row["success_rate"] == 100 and row["good_rate"] == round(100 * 4 / 6, 6)
    assert row["state"] == "violated" and row["error_budget_remaining"] < 0  # 2 of 6 late; 20% allowed
    assert ctl(daemon, "slo").returncode == 2
    table = ctl(daemon, "slo").stdout
    assert "lat" in table and "violated" in table
    status = daemon.status()
    assert [(r["queue"], r["state"]) for r in status["slo"]] == [("lat", "violated")]
    verdict = health(daemon)
    assert verdict["slo"]["level"] == "red" and "lat" in verdict["slo"]["detail"] and verdict["status"] == "red"

    _, text = scrape(port)
    assert close(sample(text, "horizon_slo_latency_seconds", queue="lat", quantile="0.99"), nearest_rank(truth, 0.99))
    assert close(sample(text, "horizon_slo_latency_seconds", queue="lat", quantile="0.5"), nearest_rank(truth, 0.5))
    assert sample(text, "horizon_slo_success_ratio", queue="lat") == 1.0
    assert sample(text, "horizon_slo_error_budget_remaining", queue="lat") < 0
    assert sample(text, "horizon_slo_burn_rate", queue="lat", window="fast") > 1
    assert scrape(port, "/healthz")[0] == 503


def _seed_good_history(redis, queue: str, jobs: int, ago: float) -> None:
    """What another master of the fleet counted earlier in the window: `jobs` good ones."""
    start = slo.slice_start(3600, time.time() - ago)
    redis.hset(slice_key("horizond", queue, 3600, start),
               mapping={"n": jobs, "f": 0, "o": 0, "x": 0, f"b{sketch.bucket_of(0.1)}": jobs})


def _fresh_minute() -> None:
    """The burn's short window is the current minute: start the burst early in one."""
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)


def test_failures_lower_the_success_rate_health_turns_yellow_then_red(start_daemon, redis):
    _seed_good_history(redis, "calm", 1000, ago=1200)
    daemon = start_daemon("""
    [slo.calm]
    throughput = 100
    max_latency = 30
    success_rate = 90

    [slo."h*"]
    throughput = 100
    max_latency = 30
    success_rate = 90

    [supervisors.alpha]
    queues = ["calm", "hot"]
    balance = "off"
    min_processes = 2
    max_processes = 2
    """)
    daemon.wait_ready({"alpha": 2})
    assert health(daemon)["slo"]["level"] == "green"
    _fresh_minute()
    calm = Queue("calm", connection=redis)
    failing = [calm.enqueue("testjobs.fail", f"c{i}") for i in range(10)]
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FAILED for j in failing), timeout=20,
               what="the failing jobs")
    row = wait_until(lambda: (r := slo_row(daemon, "calm")) and r["jobs"] == 1010 and r, timeout=10,
                     what="the failures, with the fleet's earlier jobs, in the level")
    assert row["success_rate"] == round(100 * 1000 / 1010, 6)  # failures lower it; still above 90%
    assert row["state"] == "burning" and "fast" in row["alerts"] and row["error_budget_remaining"] > 0
    assert row["burn_rate"]["fast"]["short"] == 10.0  # all failed: 10x the 10% the level allows
    verdict = health(daemon)
    assert verdict["slo"]["level"] == "yellow" and "calm" in verdict["slo"]["detail"]
    assert ctl(daemon, "slo").returncode == 1

    hot = Queue("hot", connection=redis)
    mixed = [hot.enqueue("testjobs.fail", f"h{i}") for i in range(3)] + \
        [hot.enqueue("testjobs.record", f"h{i}") for i in range(7)]
    wait_until(lambda: all(j.get_status(refresh=True) in (JobStatus.FAILED, JobStatus.FINISHED) for j in mixed),
               timeout=20, what="the mixed jobs")
    row = wait_until(lambda: (r := slo_row(daemon, "hot")) and r["jobs"] == 10 and r, timeout=10,
                     what="the hot queue's jobs in the level")
    assert row["success_rate"] == 70.0 and row["state"] == "violated" and row["pattern"] == "h*"
    verdict = health(daemon)
    assert verdict["slo"]["level"] == "red" and "violated: hot" in verdict["slo"]["detail"]
    assert verdict["status"] == "red"


def test_two_masters_fill_one_fleet_wide_level(start_daemon, redis):
    body = """
    [fleet]
    node = "{node}"

    [slo.shared]
    throughput = 100
    max_latency = 30
    success_rate = 50

    [supervisors.alpha]
    queues = ["shared"]
    min_processes = 1
    max_processes = 1
    """
    one = start_daemon(body.format(node="one"))
    two = start_daemon(body.format(node="two"))
    one.wait_ready({"alpha": 1})
    two.wait_ready({"alpha": 1})
    queue = Queue("shared", connection=redis)
    jobs = [queue.enqueue("testjobs.block", 0.2, f"j{i}") for i in range(12)]
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs), timeout=30,
               what="the jobs")
    ran_by = {int(pid) for pid in redis.hvals("test:started")}
    assert len(ran_by) == 2  # both masters' workers took jobs
    for daemon in (one, two):
        wait_until(lambda d=daemon: (r := slo_row(d, "shared")) and r["jobs"] == 12, timeout=10,
                   what="every master to see the fleet's twelve jobs")


def test_junk_under_a_level_key_counts_as_empty_and_the_master_lives(start_daemon, redis):
    start = slo.slice_start(3600, time.time())
    redis.set(slice_key("horizond", "junk", 3600, start), "not a hash")  # WRONGTYPE for HINCRBY and HGETALL
    redis.hset(slice_key("horizond", "junk", 3600, start - 60), mapping={"n": "many", "b5": 3, "x": 1})
    # what HINCRBY never writes: a name that is not UTF-8, 5,000 digits (int() refuses them), 400
    # digits (a float overflows on them): each took the master, or the dashboard, down
    redis.hset(slice_key("horizond", "junk", 3600, start - 120), mapping={b"\xff": 1, "b3": "9" * 5000, "f": 1})
    redis.hset(slice_key("horizond", "junk", 3600, start - 180), mapping={"n": "9" * 400, "x": "9" * 400})
    daemon = one_job_under_a_level(start_daemon, redis, "junk")
    wait_until(lambda: any(e.get("event") == "slo_keys_refused" for e in daemon.log_events()),
               what="the refused keys to be logged")
    row = slo_row(daemon, "junk")
    assert daemon.proc.poll() is None and row is not None
    # the junk slices read as empty ("many" is no count); the job counts only while not yet written into the junk
    assert row["jobs"] <= 1 and row["state"] in ("no data", "ok")
    assert daemon.status()["state"] == "running"


def test_saved_metrics_it_cannot_read_do_not_stop_the_levels(start_daemon, redis, tmp_path):
    """The service-level step rides in the metrics save's round trip; a metrics key of the wrong
    type (someone else's) once kept the save from starting, and the levels with it."""
    from horizond.observe.metricstore import metrics_key

    socket = str(tmp_path / "levels.sock")
    redis.rpush(metrics_key("horizond", socket), "not a string")
    daemon = one_job_under_a_level(start_daemon, redis, "lv", socket_path=socket)
    start = slo.slice_start(3600, time.time())
    wait_until(lambda: redis.hget(slice_key("horizond", "lv", 3600, start), "n") == b"1"
               or redis.hget(slice_key("horizond", "lv", 3600, start - 60), "n") == b"1",
               what="the job counted fleet-wide")
    assert any(e.get("event") == "metrics_restore_failed" for e in daemon.log_events())
    assert daemon.proc.poll() is None
