"""Issue 13, items 11 and 12, against the real daemon: jobs stuck behind a long one, and memory_hard.

11: a worker stuck in a long job must not hold the jobs queued behind it while the supervisor
    has room to scale: they get a worker at the next balancing step.
12: a job allocating fast is killed soon after it passes memory_hard (every 0.25 s check), not
    up to a second later at the loop's idle tick.
"""

from __future__ import annotations

import time

from rq import Queue

from conftest import wait_until

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


def test_jobs_behind_a_worker_stuck_in_a_long_job_get_a_worker_within_a_cooldown(start_daemon, redis):
    daemon = start_daemon(STUCK)
    daemon.wait_ready({"web": 1})
    queue = Queue("work", connection=redis)
    for i in range(5):  # the daemon measures this queue's jobs as short (0.02 s)
        queue.enqueue("testjobs.sleep_then_record", 0.02, f"warm{i}")
    wait_until(lambda: redis.hlen("test:runs") == 5, what="the warm-up jobs")

    queue.enqueue("testjobs.block", 60, "long", job_timeout=120)
    wait_until(lambda: redis.hexists("test:started", "long"), what="the long job to start")
    # the case: it has been running for longer than a cooldown when work queues up behind it
    wait_until(lambda: _busy_for(daemon.supervisor("web")) > COOLDOWN, timeout=5, what="a cooldown to pass")
    queued = time.monotonic()
    for tag in ("behind1", "behind2"):
        queue.enqueue("testjobs.sleep_then_record", 0.02, tag)
    wait_until(lambda: redis.hget("test:runs", "behind1") and redis.hget("test:runs", "behind2"),
               timeout=COOLDOWN + SPAWN + 10, interval=0.02, what="the jobs queued behind the long one to run")
    waited = time.monotonic() - queued
    assert waited <= COOLDOWN + SPAWN, f"queued jobs waited {waited:.2f} s behind a stuck worker"
    sup = daemon.supervisor("web")
    assert sup["processes"] >= 2 and sup["busy"] >= 1  # the long job still runs: a second worker took them
    assert not redis.hexists("test:runs", "long")


def _busy_for(sup: dict | None) -> float:
    """How long the oldest running job of a supervisor has been running (0: none)."""
    started = [w["job_started_at"] for w in (sup or {}).get("workers", []) if w.get("job_started_at")]
    return time.time() - min(started) if started else 0.0
