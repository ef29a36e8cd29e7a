"""What `--check-config` accepts runs (issue 13, item 3): values at the edges of every bound.

A file is generated with values drawn at the edges of horizond/config.py's SUPERVISOR_BOUNDS and
OTHER_BOUNDS (README "Bounds"), checked by the real `horizond --check-config`, then run by a real
daemon: a job enqueued on its queue runs under the configured timeout, a failing job and a job
whose worker dies under it are retried (or scheduled, for a long back-off) or failed as the file
says, and the master is still answering and stops cleanly afterwards. Two bounds are not drawn:
the metrics port (a free one is used; ports outside 1-65535 are refused by the check) and the Redis
db number (the environment's; its top edge is tested on its own below).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context, event
from rq import Queue
from rq.job import Job, JobStatus

from conftest import ROOT, TESTS, Daemon, child_env, free_port, horizonctl, wait_until
from horizond.core.config import (
    MAX_BACKOFF_STEPS,
    MAX_MB,
    MAX_SECONDS,
    MAX_SNAPSHOTS,
    OTHER_BOUNDS,
    SUPERVISOR_BOUNDS,
    Env,
    parse,
)

QUEUE = "cq"
SIMPLE = "rq.worker.SimpleWorker"
HEALTH_KEYS = ("failed_jobs", "queue_size", "oldest_job_age", "worker_memory")


class ConfigDaemon(Daemon):
    """A real horizond on a whole generated file (Daemon's own head would fix [master] values)."""

    def write_config(self, body: dict) -> None:
        data = {**body, "redis": {"url": self.redis_url}, "control": {"socket": self.socket},
                "app": {"paths": [str(TESTS)]}}
        self.config.write_text(tomli_w.dumps(data))


def _edges(key: str, *inner: float) -> list:
    lo, hi, _ = SUPERVISOR_BOUNDS[key]
    return [lo, *inner, hi]


@st.composite
def supervisor_values(draw) -> dict:
    """One supervisor's keys at their edges (each key set or left to its default)."""
    balance = draw(st.sampled_from(["auto", "simple", "off"]))
    lowest = draw(st.sampled_from([0, 1, 2]))  # min_processes' top edge (1000 forks) would swamp the host
    # "simple" runs max_processes whatever the backlog: keep that one small
    cap = draw(st.sampled_from([max(1, lowest), 2] if balance == "simple" else [max(1, lowest), 2, 1000]))
    memory = draw(st.sampled_from(_edges("memory", 128)))
    backoff = draw(st.one_of(
        st.sampled_from(_edges("backoff", 1)),
        st.lists(st.sampled_from(_edges("backoff", 1)), min_size=1, max_size=3),
        st.just([MAX_SECONDS] * MAX_BACKOFF_STEPS)))
    values = {
        "queues": [QUEUE], "balance": balance, "auto_scaling_strategy": draw(st.sampled_from(["time", "size"])),
        "min_processes": lowest, "max_processes": max(cap, lowest),
        "balance_max_shift": draw(st.sampled_from(_edges("balance_max_shift"))),
        "balance_cooldown": draw(st.sampled_from(_edges("balance_cooldown", 1.0))),
        "memory": memory,
        "memory_hard": draw(st.sampled_from([0, MAX_MB] + ([4096] if memory <= 4096 else []))),
        "timeout": draw(st.sampled_from(_edges("timeout", 60))),
        "tries": draw(st.sampled_from(_edges("tries", 2))),
        "backoff": backoff,
        "max_jobs": draw(st.sampled_from(_edges("max_jobs", 1))),
        "max_time": draw(st.sampled_from(_edges("max_time", 1))),
        "worker_class": draw(st.sampled_from([None, SIMPLE])),
        "min_free_memory": draw(st.sampled_from(["0%", "5%", "100%", 0, MAX_MB])),
        "fleet_max_processes": draw(st.sampled_from([None, max(1, lowest), _edges("fleet_max_processes")[-1]])),
    }
    left_out = draw(st.lists(st.sampled_from(sorted(set(values) - {"queues", "min_processes"})), unique=True))
    return {k: v for k, v in values.items() if k not in left_out and v is not None}


@st.composite
def other_tables(draw) -> dict:
    """[master], [metrics], [health] and [waits] at their edges."""
    def edge(table: str, key: str, *inner: float) -> list:
        lo, hi, _ = OTHER_BOUNDS[(table, key)]
        return [lo, *inner, hi]

    interval = draw(st.sampled_from(edge("metrics", "snapshot_interval", 60)))
    keeps = [h for h in edge("metrics", "snapshot_keep_hours", 24) if h * 3600 // interval <= MAX_SNAPSHOTS]
    lo, hi, _ = OTHER_BOUNDS[("health", "*")]
    pairs = st.sampled_from([[lo, lo], [lo, hi], [hi, hi], [1, 2]])
    waits = edge("waits", "*", 1)
    return {
        "master": {"shutdown_grace": draw(st.sampled_from(edge("master", "shutdown_grace", 0.5))),
                   "hard_timeout_grace": draw(st.sampled_from(edge("master", "hard_timeout_grace"))),
                   "memory_limit": draw(st.sampled_from([0, MAX_MB]))},  # 1 MB: re-exec every 10 s, by design
        "metrics": {"snapshot_interval": interval, "snapshot_keep_hours": draw(st.sampled_from(keeps)),
                    **({"listen": f"127.0.0.1:{free_port()}"} if draw(st.booleans()) else {})},
        "health": draw(st.dictionaries(st.sampled_from(HEALTH_KEYS), pairs)),
        "waits": draw(st.dictionaries(st.sampled_from([QUEUE, "*", "c*"]), st.sampled_from(waits))),
        "fleet": {"heartbeat": draw(st.sampled_from(edge("fleet", "heartbeat", 2)))},
    }


@st.composite
def config_files(draw) -> dict:
    sup = draw(supervisor_values())
    # any key may come from [defaults] instead of the supervisor's table
    inherited = draw(st.lists(st.sampled_from(sorted(set(sup) - {"queues"})), unique=True))
    data = draw(other_tables())
    data["defaults"] = {k: sup.pop(k) for k in inherited}
    data["supervisors"] = {"edge": sup}
    return data


def file_of(timeout: int = MAX_SECONDS, backoff=(MAX_SECONDS,), **sup) -> dict:
    """An explicit example: a supervisor at these values, the other tables at their defaults."""
    return {"supervisors": {"edge": {"queues": [QUEUE], "min_processes": 1, "tries": 2, "timeout": timeout,
                                     "backoff": list(backoff), **sup}}}


EXAMPLES = [
    # the runtime failures, at the new top edges, with either worker class
    file_of(),
    file_of(worker_class=SIMPLE),
    # the scale-up held by the memory guard: the floor still runs the job
    file_of(min_free_memory="100%", balance_cooldown=0.1, max_processes=1000, balance_max_shift=1000),
    file_of(min_free_memory=MAX_MB, min_processes=0),  # ... and without a floor nothing runs: status says why
    # every lower edge at once, jobs retried at once
    {"master": {"shutdown_grace": 0, "hard_timeout_grace": 0, "memory_limit": 0},
     "metrics": {"snapshot_interval": 1, "snapshot_keep_hours": 1},
     "health": {k: [0, 0] for k in HEALTH_KEYS}, "waits": {"*": 0},
     "supervisors": {"edge": {"queues": [QUEUE], "min_processes": 0, "max_processes": 1, "balance_max_shift": 1,
                              "balance_cooldown": 0.1, "memory": 1, "memory_hard": 0, "timeout": 1, "tries": 1000,
                              "backoff": [0], "max_jobs": 1, "max_time": 1, "min_free_memory": 0}}},
]


@settings(max_examples=10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=config_files())
@example(data=EXAMPLES[0])
@example(data=EXAMPLES[1])
@example(data=EXAMPLES[2])
@example(data=EXAMPLES[3])
@example(data=EXAMPLES[4])
def test_every_file_the_check_accepts_starts_a_daemon_that_runs_a_job(redis, redis_url, data):
    run_on(data, redis, redis_url)


@pytest.mark.parametrize("worker_class", [None, SIMPLE], ids=["lean", "SimpleWorker"])
def test_the_longest_timeout_and_back_off_work_at_runtime(redis, redis_url, worker_class):
    """timeout = 2592000 is armed as such (alarm(2), Redis EXPIRE), backoff = [2592000] schedules."""
    run_on(file_of(**({"worker_class": worker_class} if worker_class else {})), redis, redis_url)


# --- one generated file, end to end ------------------------------------------------------------


def run_on(data: dict, redis, redis_url: str) -> None:
    redis.flushall()
    folder = Path(tempfile.mkdtemp(prefix="hz-cfg-"))  # short: the control socket's path has a limit
    daemon = None
    try:
        probe = Queue(QUEUE, connection=redis).enqueue("configjobs.probe", "first")  # waiting before the start
        daemon = ConfigDaemon(folder, redis_url, data)
        checked = subprocess.run([sys.executable, "-m", "horizond", "--check-config", "--config", str(daemon.config)],
                                 capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=30)
        assert checked.returncode == 0, checked.stderr
        sup = parse(daemon.config.read_bytes(), str(daemon.config), Env()).supervisors[0]
        _seen(f"worker_class={sup.worker_class}, min_free_memory={sup.min_free_memory}, floor={sup.min_processes}")
        if _memory_guard_holds(sup) and sup.min_processes == 0:
            _scale_up_is_held_and_said(daemon, probe)
        else:
            _jobs_run_as_configured(daemon, redis, sup, probe)
        _master_answers_and_stops(daemon, data)
    finally:
        if daemon:
            daemon.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _seen(what: str) -> None:
    """Which paths the examples took (pytest --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(what)


def _memory_guard_holds(sup) -> bool:
    memory = psutil.virtual_memory()
    return memory.available < sup.free_memory_floor(memory.total)


def _scale_up_is_held_and_said(daemon, probe: Job) -> None:
    """min_free_memory over what the host has and no floor: no worker, and status says why."""
    wait_until(lambda: (s := daemon.supervisor("edge")) and "free memory low" in s["queues"][QUEUE]["reason"],
               timeout=20, what="status to say the memory guard holds the scale-up")
    assert daemon.supervisor("edge")["workers"] == [] and probe.get_status(refresh=True) == JobStatus.QUEUED


def _jobs_run_as_configured(daemon, redis, sup, probe: Job) -> None:
    ended = wait_until(lambda: probe.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED) and probe,
                       timeout=20, what="the waiting job to run")
    assert ended.get_status() == JobStatus.FINISHED, ended.latest_result().exc_string
    assert redis.hget("cfg:runs", "first") == b"1"
    armed = float(redis.hget("cfg:alarm", "first"))
    assert 0 < armed <= sup.timeout and armed > sup.timeout - 5, f"a {armed} s alarm, not {sup.timeout} s"
    # RQ keeps a running job in its started registry past its timeout (+60 s): not dropped early
    kept = float(redis.hget("cfg:kept", "first"))
    assert sup.timeout <= kept < sup.timeout + 120, f"kept as started for {kept} s under timeout {sup.timeout}"
    queue = Queue(QUEUE, connection=redis)
    for func, tag in (("configjobs.fail_once", "failing"), ("configjobs.exit_once", "dying")):
        enqueued_at = time.time()
        job = queue.enqueue(func, tag)
        _retried_as_configured(redis, queue, job, sup, enqueued_at, dies=func.endswith("exit_once"))


def _retried_as_configured(redis, queue: Queue, job: Job, sup, enqueued_at: float, dies: bool) -> None:
    """tries = 1: failed with the cause; a zero or 1 s back-off: the second attempt finishes;
    a longer one: scheduled that far ahead (to RQ's whole second)."""
    wait_until(lambda: redis.llen(f"cfg:attempts:{job.args[0]}") >= 1, timeout=20, what=f"{job.func_name} to start")
    first_wait = sup.backoff[0]
    _seen(f"{'dying' if dies else 'failing'} job: tries={sup.tries}, first back-off {first_wait} s")
    if sup.tries == 1:
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FAILED, timeout=20, what="the job to fail")
        cause = "stopped while running this job" if dies else "failing the first attempt on purpose"
        assert cause in job.latest_result().exc_string
    elif first_wait <= 1:
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=20, what="the retry to finish")
        assert redis.llen(f"cfg:attempts:{job.args[0]}") == 2
    else:
        registry = queue.scheduled_job_registry
        score = wait_until(lambda: redis.zscore(registry.key, job.id), timeout=20, what="the retry to be scheduled")
        assert enqueued_at + first_wait - 1 < score <= time.time() + first_wait
        assert job.get_status(refresh=True) == JobStatus.SCHEDULED
        assert job.id not in queue.started_job_registry.get_job_ids()


def _master_answers_and_stops(daemon, data: dict) -> None:
    status = daemon.status()
    assert status["state"] == "running" and status["pid"] == daemon.proc.pid
    assert status["supervisors"][0]["queues"][QUEUE]["reason"]  # the balancer has run on this file
    health = horizonctl("health", "--json", socket_path=daemon.socket)
    assert health.returncode in (0, 1, 2) and json.loads(health.stdout)["status"] in ("green", "yellow", "red")
    listen = data.get("metrics", {}).get("listen")
    if listen:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
            assert response.status == 200 and b"horizon_worker_count" in response.read()
    errors = [e for e in daemon.log_events() if e.get("role") == "master" and e.get("level") in ("ERROR", "CRITICAL")]
    assert errors == [], errors
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert not os.path.exists(daemon.socket)


def test_the_edge_lists_cover_every_bound():
    """A new bound in config.py gets generated here too (or this fails and says which)."""
    covered = {"min_processes", "max_processes", "balance_max_shift", "balance_cooldown", "memory", "memory_hard",
               "timeout", "tries", "backoff", "max_jobs", "max_time", "min_free_memory", "fleet_max_processes"}
    assert set(SUPERVISOR_BOUNDS) == covered
    others = {("master", "shutdown_grace"), ("master", "hard_timeout_grace"), ("master", "memory_limit"),
              ("metrics", "snapshot_interval"), ("metrics", "snapshot_keep_hours"), ("metrics", "listen"),
              ("health", "*"), ("waits", "*"), ("redis", "url"), ("fleet", "heartbeat")}
    assert set(OTHER_BOUNDS) == others


def test_a_db_number_the_server_does_not_have_is_one_clear_error_at_start(redis_url, tmp_path):
    """The check accepts db 0-2147483647 (servers differ in `databases`); a server with fewer
    refuses the SELECT: one clear line naming it and exit 2, not a traceback."""
    url = redis_url.rsplit("/", 1)[0] + "/2147483647"
    daemon = Daemon(tmp_path, url, f'[supervisors.edge]\nqueues = ["{QUEUE}"]\n')
    try:
        assert daemon.wait_exit(20) == 2
        text = daemon.log_path.read_text()
        assert "Traceback" not in text, text[-2000:]
        refused = [e for e in daemon.log_events() if e.get("event") == "redis_setup_failed"]
        assert len(refused) == 1 and "DB index is out of range" in refused[0]["message"]
        assert "/2147483647" in refused[0]["message"]
    finally:
        daemon.cleanup()
