"""Failed-job commands and the health verdict, through horizonctl against a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC

from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from conftest import ROOT, child_env, horizonctl, wait_until

BODY = """
[supervisors.alpha]
queues = ["qa", "qb"]
min_processes = 1
"""


def ctl(daemon, *args):
    return horizonctl(*args, socket_path=daemon.socket)


def setup_jobs(daemon, redis):
    daemon.wait_ready({"alpha": 2})
    for i in range(50):
        Queue("qa" if i % 2 else "qb", connection=redis).enqueue("testjobs.record", f"ok{i}")
    bad = [Queue("qa", connection=redis).enqueue("testjobs.fail", f"bad{i}") for i in range(3)]
    wait_until(lambda: redis.hlen("test:runs") == 50 and all(j.get_status(refresh=True) == JobStatus.FAILED
                                                              for j in bad), timeout=20, what="53 jobs to end")
    return bad


def test_failed_list_show_retry_forget_flush(start_daemon, redis):
    daemon = start_daemon(BODY)
    bad = setup_jobs(daemon, redis)
    listed = json.loads(ctl(daemon, "failed", "--json").stdout)
    assert sorted(j["id"] for j in listed) == sorted(j.id for j in bad)
    assert all(j["queue"] == "qa" and j["func"] == "testjobs.fail" and j["failed_at"] and
               j["exception"].startswith("RuntimeError: failing on purpose") for j in listed)
    assert json.loads(ctl(daemon, "failed", "--queue", "qb", "--json").stdout) == []
    shown = ctl(daemon, "failed", "show", bad[0].id)
    assert shown.returncode == 0 and "Traceback" in shown.stdout and "'bad0'" in shown.stdout

    unknown = ctl(daemon, "retry", bad[0].id, "no-such-job")
    assert unknown.returncode != 0 and "no-such-job" in unknown.stderr and "nothing was changed" in unknown.stderr
    assert bad[0].get_status(refresh=True) == JobStatus.FAILED  # the known one was not retried either

    assert ctl(daemon, "retry", bad[0].id).returncode == 0
    wait_until(lambda: redis.llen("test:attempts:bad0") == 2, what="the retried job to run again")
    assert ctl(daemon, "forget", bad[1].id).returncode == 0
    assert not redis.exists(f"rq:job:{bad[1].id}")
    wait_until(lambda: bad[0].get_status(refresh=True) == JobStatus.FAILED, what="the retry to fail again")
    remaining = {j["id"] for j in json.loads(ctl(daemon, "failed", "--json").stdout)}
    assert remaining == {bad[0].id, bad[2].id}
    flushed = ctl(daemon, "flush")
    assert flushed.returncode == 0 and "deleted 2" in flushed.stdout
    assert json.loads(ctl(daemon, "failed", "--json").stdout) == []


def test_retry_all_and_prune_by_age(start_daemon, redis):
    daemon = start_daemon(BODY)
    bad = setup_jobs(daemon, redis)
    assert "deleted 0" in ctl(daemon, "prune-failed", "--hours", "1").stdout  # all younger than an hour
    assert ctl(daemon, "retry", "all", "--queue", "qa").returncode == 0
    wait_until(lambda: all(redis.llen(f"test:attempts:bad{i}") == 2 for i in range(3)), what="all retried")
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FAILED for j in bad), what="failed again")
    assert "deleted 3" in ctl(daemon, "prune-failed", "--hours", "0").stdout
    assert all(not Job.exists(j.id, connection=redis) for j in bad)


def test_clear_needs_yes_without_a_terminal(start_daemon, redis):
    daemon = start_daemon(BODY)
    daemon.wait_ready({"alpha": 2})
    ctl(daemon, "pause")
    for i in range(7):
        Queue("qb", connection=redis).enqueue("testjobs.record", f"c{i}")
    refused = ctl(daemon, "clear", "qb")
    assert refused.returncode != 0 and "--yes" in refused.stderr and redis.llen("rq:queue:qb") == 7
    cleared = ctl(daemon, "clear", "qb", "--yes")
    assert cleared.returncode == 0 and "deleted 7" in cleared.stdout and redis.llen("rq:queue:qb") == 0
    assert ctl(daemon, "clear", "nope", "--yes").returncode != 0


def verdict(daemon):
    result = ctl(daemon, "health", "--json")
    return result.returncode, json.loads(result.stdout)


def test_health_green_yellow_red(start_daemon, redis):
    daemon = start_daemon(BODY + "\n[health]\nqueue_size = [100, 200]\n")
    setup_jobs(daemon, redis)
    code, result = verdict(daemon)
    assert (code, result["status"]) == (0, "green"), result
    for i in range(8):  # 11 failed jobs: past the default warning of 10
        Queue("qa", connection=redis).enqueue("testjobs.fail", f"more{i}")
    wait_until(lambda: verdict(daemon)[0] == 1, timeout=20, what="yellow on failed jobs")
    ctl(daemon, "pause")
    with redis.pipeline() as pipe:
        for i in range(250):
            Queue("qb", connection=redis).enqueue("testjobs.record", f"w{i}", pipeline=pipe)
        pipe.execute()
    code, result = verdict(daemon)
    assert code == 2 and result["status"] == "red"
    sizes = next(i for i in result["indicators"] if i["name"] == "queue_size")
    assert sizes["level"] == "red" and "qb" in sizes["detail"]
    text = ctl(daemon, "health")
    assert text.returncode == 2 and "RED" in text.stdout and "failed_jobs" in text.stdout


def test_health_is_red_when_no_daemon_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "horizond.control.ctl",
                             "--socket", str(tmp_path / "none"), "health"],
                            capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=30)
    assert result.returncode == 2 and "RED" in result.stdout and "not running" in result.stdout


def fail_many(redis, queue: str, n: int, old: int = 0, func: str = "testjobs.record") -> list[str]:
    """n jobs in the failed registry as RQ leaves them (status, ended_at, exc_info); the first
    `old` of them failed two hours ago."""
    from datetime import datetime, timedelta

    from rq.registry import FailedJobRegistry

    q = Queue(queue, connection=redis)
    registry = FailedJobRegistry(queue, connection=redis)
    ids = []
    for start in range(0, n, 500):
        jobs = [Job.create(func, args=(f"f{i}",), connection=redis, origin=queue)
                for i in range(start, min(n, start + 500))]
        with redis.pipeline() as pipe:
            for i, job in enumerate(jobs, start):
                ago = timedelta(hours=2) if i < old else timedelta(seconds=1)
                job.ended_at = datetime.now(UTC) - ago
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                job.save(pipeline=pipe)
                registry.add(job, ttl=3600 * 24, pipeline=pipe, exc_string="RuntimeError: made to fail")
            pipe.execute()
        ids += [j.id for j in jobs]
    assert q.count == 0
    return ids


def test_bulk_commands_on_a_huge_registry_keep_the_master_answering(start_daemon, redis):
    """retry all / flush / prune-failed work a chunk per request: status stays prompt meanwhile."""
    import threading
    import time

    from horizond.control.ctl import request

    daemon = start_daemon(BODY)
    daemon.wait_ready({"alpha": 2})
    assert ctl(daemon, "pause").returncode == 0
    fail_many(redis, "qa", 5000, old=3000)
    fail_many(redis, "qb", 1000)

    def worst_status_latency(command) -> tuple[subprocess.CompletedProcess, float]:
        """Run the command while a thread asks for status; its answers are judged here, after
        join (an assert in the thread would only end the thread, and the test would pass)."""
        latencies, failures, done = [], [], threading.Event()

        def poll():
            while not done.is_set():
                started = time.monotonic()
                try:
                    response = request(daemon.socket, "status")
                except Exception as exc:  # reported by the main thread
                    failures.append(repr(exc))
                    return
                latencies.append(time.monotonic() - started)
                if not response["ok"]:
                    failures.append(response)
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            result = ctl(daemon, *command)
        finally:
            done.set()
            poller.join(30)
        assert not poller.is_alive(), "a status request never returned"
        assert failures == [] and latencies, (failures, len(latencies))
        return result, max(latencies)

    pruned, worst = worst_status_latency(["prune-failed", "--hours", "1"])
    assert pruned.returncode == 0 and "deleted 3000 failed job(s)" in pruned.stdout, pruned
    assert worst < 1.5, f"status waited {worst:.2f} s while prune-failed ran"
    retried, worst = worst_status_latency(["retry", "all", "--queue", "qa"])
    assert retried.returncode == 0 and "retried 2000 job(s)" in retried.stdout, retried
    assert worst < 1.5, f"status waited {worst:.2f} s while retry all ran"
    assert Queue("qa", connection=redis).count == 2000
    flushed, worst = worst_status_latency(["flush"])
    assert flushed.returncode == 0 and "deleted 1000 failed job(s)" in flushed.stdout, flushed
    assert worst < 1.5
    assert json.loads(ctl(daemon, "failed", "--json").stdout) == []


def test_retry_all_retries_each_job_once_even_when_it_fails_again_at_once(start_daemon, redis):
    """Retried jobs that fail again land back in the registry while the walk is still going:
    they must not be retried again by the same command (nor keep it running for ever)."""
    daemon = start_daemon(BODY)
    daemon.wait_ready({"alpha": 2})
    fail_many(redis, "qa", 1500, func="testjobs.fail")
    retried = ctl(daemon, "retry", "all")
    assert retried.returncode == 0 and "retried 1500 job(s)" in retried.stdout, retried
    wait_until(lambda: Queue("qa", connection=redis).count == 0 and
               redis.zcard("rq:failed:qa") == 1500 and not redis.zcard("rq:wip:qa"), timeout=60,
               what="every retried job to fail again")
    attempts = [redis.llen(f"test:attempts:f{i}") for i in range(1500)]
    assert attempts == [1] * 1500, sorted(set(attempts))


def test_retry_all_and_flush_with_match_act_on_the_matching_jobs_only(start_daemon, redis):
    """`--match TEXT` (the dashboard's "every job matching the filter"): id, function or exception
    line, in any case; the others stay failed."""
    daemon = start_daemon(BODY)
    daemon.wait_ready({"alpha": 2})
    assert ctl(daemon, "pause").returncode == 0  # retried jobs stay queued, to be counted
    queue = Queue("qa", connection=redis)
    jobs = {tag: queue.enqueue("testjobs.fail", tag) for tag in ("alpha-1", "alpha-2", "beta-1", "beta-2", "gamma")}
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert all(j.get_status(refresh=True) == JobStatus.FAILED for j in jobs.values())

    retried = ctl(daemon, "retry", "all", "--match", "ALPHA")  # in the exception line: "failing on purpose: alpha-1"
    assert retried.returncode == 0 and "retried 2 job(s)" in retried.stdout
    assert {j.decode() for j in redis.lrange("rq:queue:qa", 0, -1)} == {jobs["alpha-1"].id, jobs["alpha-2"].id}
    by_id = ctl(daemon, "flush", "--match", jobs["gamma"].id[:12])  # a job id's start
    assert by_id.returncode == 0 and "deleted 1 failed job(s)" in by_id.stdout and not jobs["gamma"].exists(
        jobs["gamma"].id, connection=redis)
    assert "deleted 0" in ctl(daemon, "flush", "--match", "testjobs.record").stdout  # no such function failed
    flushed = ctl(daemon, "flush", "--match", "beta", "--queue", "qa")
    assert flushed.returncode == 0 and "deleted 2 failed job(s)" in flushed.stdout
    assert redis.zcard("rq:failed:qa") == 0

    for bad, says in ((["retry", jobs["beta-1"].id, "--match", "x"], "--match go with 'all'"),
                      (["flush", "--match", " "], "--match must be some text"),
                      (["retry", "all", "--match", "x" * 201], "at most 200 characters")):
        refused = ctl(daemon, *bad)
        assert refused.returncode != 0 and says in refused.stderr, (bad, refused.stderr)
    for cmd in ("retry", "flush"):
        assert "--match TEXT" in horizonctl(cmd, "--help").stdout
