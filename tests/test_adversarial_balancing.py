"""Issue 13, items 11 and 12, against the real daemon: jobs stuck behind a long one, and memory_hard.

11: a worker stuck in a long job must not hold the jobs queued behind it while the supervisor
    has room to scale: they get a worker at the next balancing step.
12: a job allocating fast is killed soon after it passes memory_hard (every 0.25 s check), not
    up to a second later at the loop's idle tick.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from rq import Queue

from conftest import wait_until
from horizond.connection.redisconn import RedisSpec
from horizond.core.config import Config, SupervisorConfig
from horizond.supervise.guard import MEMORY_HARD_EVERY, Guard
from horizond.supervise.process import WorkerProcess
from horizond.worker.channel import WorkerLink
from horizond.worker.child import ChildSpec

STUCK = """
[supervisors.web]
queues = ["work"]
balance = "auto"
auto_scaling_strategy = "time"
min_processes = 1
max_processes = 4
balance_cooldown = 1
"""

COOLDOWN = 1.0
SPAWN = 1.5  # fork, import, register with Redis, take the job: generous on a loaded 2-core machine


@pytest.mark.parametrize("stuck_for, within", [(COOLDOWN, COOLDOWN + SPAWN), (0, 2 * COOLDOWN + SPAWN)],
                         ids=["stuck-a-cooldown-already", "just-started"])
def test_jobs_behind_a_worker_stuck_in_a_long_job_get_a_worker_within_a_cooldown(start_daemon, redis, stuck_for,
                                                                                 within):
    daemon = start_daemon(STUCK)
    daemon.wait_ready({"web": 1})
    queue = Queue("work", connection=redis)
    for i in range(5):  # the daemon measures this queue's jobs as short (0.02 s)
        queue.enqueue("testjobs.sleep_then_record", 0.02, f"warm{i}")
    wait_until(lambda: redis.hlen("test:runs") == 5, what="the warm-up jobs")

    queue.enqueue("testjobs.block", 60, "long", job_timeout=120)
    wait_until(lambda: redis.hexists("test:started", "long"), what="the long job to start")
    # the case: it has been running for a cooldown when work queues up behind it; or it
    # has just started (it is not known to be long yet: one more step)
    wait_until(lambda: _busy_for(daemon.supervisor("web")) > stuck_for, timeout=5, what="the long job to run on")
    queued = time.monotonic()
    for tag in ("behind1", "behind2"):
        queue.enqueue("testjobs.sleep_then_record", 0.02, tag)
    wait_until(lambda: redis.hget("test:runs", "behind1") and redis.hget("test:runs", "behind2"),
               timeout=within + 10, interval=0.02, what="the jobs queued behind the long one to run")
    waited = time.monotonic() - queued
    assert waited <= within, f"queued jobs waited {waited:.2f} s behind a stuck worker"
    sup = daemon.supervisor("web")
    assert sup["processes"] >= 2 and sup["busy"] >= 1  # the long job still runs: a second worker took them
    assert not redis.hexists("test:runs", "long")


def _busy_for(sup: dict | None) -> float:
    """How long the oldest running job of a supervisor has been running (0: none)."""
    started = [w["job_started_at"] for w in (sup or {}).get("workers", []) if w.get("job_started_at")]
    return time.time() - min(started) if started else 0.0


HOGS = """
[supervisors.hogs]
queues = ["hogs"]
balance = "off"
min_processes = 2
max_processes = 2
memory = 128
memory_hard = 250
balance_cooldown = 3600
"""

CHECK_EVERY = 0.25  # the README's bound: RSS checked this often while a job runs under memory_hard
LATENCY = 0.15  # the loop's own delay, the kill and the job's last report (it reports every 0.02 s)


def test_a_fast_allocating_job_is_killed_within_a_quarter_second_of_passing_memory_hard(start_daemon, redis):
    daemon = start_daemon(HOGS)
    daemon.wait_ready({"hogs": 2})
    queue = Queue("hogs", connection=redis)
    # 300-500 MB/s up to 1.5 GB if nothing stops them; one takes 200 MB at once (just under the
    # limit, so it passes it right after starting), the other passes it later, at another phase
    tags = ("hog1", "hog2")
    for tag, head_mb in zip(tags, (200, 0), strict=True):
        queue.enqueue("pressurejobs.allocate_fast", 250, tag, head_mb, job_timeout=60)
    # the test reads Redis and the log only: a status request would wake the master's loop and hide the bug
    killed = wait_until(lambda: len(kills := _memory_kills(daemon)) >= 2 and kills, timeout=25, interval=0.1,
                        what="both workers to be killed for memory_hard")
    for tag in tags:
        seen = {k.decode(): float(v) for k, v in redis.hgetall(f"test:alloc:{tag}").items()}
        assert seen, f"{tag} never ran"
        # no `crossed`: the kill came between the job passing the limit and its report of it
        over = seen["last"] - seen.get("crossed", seen["last"])
        assert over <= CHECK_EVERY + LATENCY, f"{tag} ran {over:.2f} s over memory_hard, up to {seen['peak_mb']:.0f} MB"
    assert not redis.hexists("test:runs", "hog1") and not redis.hexists("test:runs", "hog2")
    assert all("memory_hard: RSS" in k["cause"] for k in killed)


def _memory_kills(daemon) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == "worker_killed" and "memory_hard" in e.get("cause", "")]


def test_memory_hard_is_a_duty_on_its_own_deadline_only_while_a_job_runs_under_it(tmp_path):
    """The loop wakes for it every 0.25 s while a job runs under memory_hard, and not at all otherwise."""
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a real process for psutil to read
    watched = _worker(child.pid, memory_hard=4096)
    unlimited = _worker(child.pid, memory_hard=0)
    try:
        guard, config = Guard(), Config("redis://127.0.0.1:1/0", str(tmp_path / "ctl.sock"), (watched.spec.supervisor,))
        assert guard.memory_due_in([watched, unlimited], 0.0) is None  # idle: no wake-up at all
        unlimited.state = "busy"
        assert guard.memory_due_in([watched, unlimited], 0.0) is None  # busy, but no memory_hard
        watched.state = "busy"
        assert guard.memory_due_in([watched, unlimited], 100.0) <= 0  # due now
        guard.check_limits([watched, unlimited], config, 100.0)
        assert watched.rss > 0 and unlimited.rss == 0
        assert guard.memory_due_in([watched], 100.0) == MEMORY_HARD_EVERY == 0.25
        watched.rss = 0
        guard.check_limits([watched], config, 100.1)  # a pass woken by something else: not measured again
        assert watched.rss == 0
        guard.check_limits([watched], config, 100.25)
        assert watched.rss > 0 and watched.kill_sent is None
    finally:
        child.kill()
        child.wait()
        for proc in (watched, unlimited):
            proc.link.close()


def _worker(pid: int, memory_hard: int) -> WorkerProcess:
    ours, theirs = socket.socketpair()
    theirs.close()
    spec = ChildSpec("worker", RedisSpec("redis://127.0.0.1:1/0"), os.getpid(), 20,
                     SupervisorConfig("hogs", memory_hard=memory_hard))
    return WorkerProcess(pid, spec, WorkerLink(ours.detach()), 1)
