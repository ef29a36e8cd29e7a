"""Auto-balancing with the real daemon: up fast on a backlog, never past the cap, back to the floor."""

from __future__ import annotations

import time

from rq import Queue

from conftest import wait_until

ISSUE = """
[supervisors.web]
queues = ["a", "b"]
balance = "auto"
auto_scaling_strategy = "size"
min_processes = 1
max_processes = 8
balance_max_shift = 2
balance_cooldown = 1
"""


def test_idle_runs_the_floor_scales_up_fast_on_a_backlog_and_back_down(start_daemon, redis):
    daemon = start_daemon(ISSUE)
    status = daemon.wait_ready({"web": 2})
    sup = status["supervisors"][0]
    assert {q: v["processes"] for q, v in sup["queues"].items()} == {"a": 1, "b": 1}  # starts at the floor

    queue = Queue("a", connection=redis)
    with redis.pipeline() as pipe:
        for i in range(1500):
            queue.enqueue("testjobs.sleep_then_record", 0.2, f"j{i}", pipeline=pipe)
        pipe.execute()
    started = time.monotonic()
    peak, reached = 0, None
    while time.monotonic() - started < 15:
        sup = daemon.supervisor("web")
        peak = max(peak, len(sup["workers"]))  # live and retiring: every process that exists
        if sup["queues"]["a"]["processes"] == 7 and reached is None:
            reached = time.monotonic() - started
            break
        time.sleep(0.05)
    assert reached is not None and reached <= 3 * 1 + 2, f"reached 7 on a after {reached}s"
    assert "backlog" in sup["queues"]["a"]["reason"]
    assert sup["queues"]["b"]["processes"] == 1
    # drain: never more than 8 processes in total; then back to 1 + 1 within a few cooldowns
    redis.delete("rq:queue:a")

    def back_to_floor():
        nonlocal peak
        sup = daemon.supervisor("web")
        peak = max(peak, len(sup["workers"]))  # sampled through the drain too
        return sup["queues"]["a"]["processes"] == 1 and sup["queues"]["b"]["processes"] == 1 and not sup["retiring"]
    wait_until(back_to_floor, timeout=15, interval=0.05, what="back to the floor")
    assert peak <= 8


def test_time_strategy_gives_the_slower_queue_the_larger_share(start_daemon, redis):
    daemon = start_daemon(ISSUE.replace('"size"', '"time"'))
    daemon.wait_ready({"web": 2})
    # measure each queue's runtime first: 0.05 s jobs on a, 0.5 s jobs on b
    for q, seconds in (("a", 0.05), ("b", 0.5)):
        Queue(q, connection=redis).enqueue("testjobs.sleep_then_record", seconds, f"warm-{q}")
    wait_until(lambda: redis.hlen("test:runs") == 2, what="one job on each queue")
    with redis.pipeline() as pipe:
        for i in range(300):
            for q, seconds in (("a", 0.05), ("b", 0.5)):
                Queue(q, connection=redis).enqueue("testjobs.sleep_then_record", seconds, f"{q}{i}", pipeline=pipe)
        pipe.execute()
    sup = wait_until(lambda: (s := daemon.supervisor("web")) and s["queues"]["b"]["target"] >= 5 and s,
                     timeout=15, interval=0.1, what="b to get the larger share")
    assert sup["queues"]["b"]["target"] > sup["queues"]["a"]["target"]
    assert sup["queues"]["a"]["target"] + sup["queues"]["b"]["target"] <= 8


def test_low_free_memory_holds_scale_up_and_says_so(start_daemon, redis):
    daemon = start_daemon(ISSUE.replace("balance_cooldown = 1", 'balance_cooldown = 1\nmin_free_memory = "100%"'))
    daemon.wait_ready({"web": 2})
    queue = Queue("a", connection=redis)
    for i in range(200):
        queue.enqueue("testjobs.sleep_then_record", 0.2, f"m{i}")
    sup = wait_until(lambda: (s := daemon.supervisor("web")) and "free memory low" in s["queues"]["a"]["reason"]
                     and s, timeout=10, what="the memory guard to hold the scale-up")
    assert sup["memory_ok"] is False and sup["queues"]["a"]["target"] == 1
    assert [e for e in daemon.log_events() if e.get("event") == "memory_guard_on"]


def test_a_queue_pattern_gets_a_pool_per_matching_queue(start_daemon, redis):
    daemon = start_daemon("""
    [supervisors.tenants]
    queues = ["webhooks-company-*"]
    balance_cooldown = 0.5
    """)
    for tenant in ("acme", "globex"):
        Queue(f"webhooks-company-{tenant}", connection=redis).enqueue("testjobs.record", tenant)
    wait_until(lambda: redis.hlen("test:runs") == 2, timeout=15, what="each tenant's job to run")
    sup = daemon.supervisor("tenants")
    assert set(sup["queues"]) == {"webhooks-company-acme", "webhooks-company-globex"}
    Queue("webhooks-company-initech", connection=redis).enqueue("testjobs.record", "initech")
    wait_until(lambda: redis.hget("test:runs", "initech") == b"1", timeout=15, what="a new tenant's queue")
