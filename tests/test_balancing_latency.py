"""auto_scaling_strategy = "latency" with the real daemon: pools sized to their service level.

Two queues with backlogs: "urgent" promises 3 s from enqueue to finish for its 0.2 s jobs,
"bulk" promises an hour for its 0.5 s jobs. "time" splits the processes by pending work, so
bulk's larger backlog takes most of them and urgent's jobs wait; "latency" gives urgent what
it needs to finish within 3 s and bulk what is left.
"""

from __future__ import annotations

import pytest
from rq import Queue

from conftest import wait_until

CONFIG = """
[supervisors.web]
queues = ["urgent", "bulk"]
balance = "auto"
auto_scaling_strategy = "STRATEGY"
min_processes = 1
max_processes = 8
balance_max_shift = 8
balance_cooldown = 0.5

[slo.urgent]
throughput = 600
max_latency = 3
success_rate = 99

[slo.bulk]
throughput = 60
max_latency = 3600
success_rate = 95
"""


def _warm_then_flood(daemon, redis) -> None:
    daemon.wait_ready({"web": 2})
    for q, seconds in (("urgent", 0.2), ("bulk", 0.5)):  # the runtimes are measured first
        Queue(q, connection=redis).enqueue("testjobs.sleep_then_record", seconds, f"warm-{q}")
    wait_until(lambda: redis.hlen("test:runs") == 2, what="one job on each queue")
    with redis.pipeline() as pipe:
        for i in range(40):
            Queue("urgent", connection=redis).enqueue("testjobs.sleep_then_record", 0.2, f"u{i}", pipeline=pipe)
        for i in range(400):
            Queue("bulk", connection=redis).enqueue("testjobs.sleep_then_record", 0.5, f"b{i}", pipeline=pipe)
        pipe.execute()


@pytest.mark.parametrize("strategy", ["time", "latency"])
def test_the_queue_with_the_tight_level_gets_the_processes_only_under_latency(start_daemon, redis, strategy):
    daemon = start_daemon(CONFIG.replace("STRATEGY", strategy))
    _warm_then_flood(daemon, redis)
    sup = wait_until(lambda: (s := daemon.supervisor("web")) and s["queues"]["bulk"]["target"]
                     + s["queues"]["urgent"]["target"] == 8 and s, timeout=10, interval=0.05,
                     what="the backlogs to take every process")
    urgent, bulk = sup["queues"]["urgent"], sup["queues"]["bulk"]
    if strategy == "time":  # bulk's 200 s of work against urgent's 8 s: urgent keeps its floor
        assert urgent["target"] < bulk["target"], (urgent, bulk)
    else:  # 40 x 0.2 s within 3 s needs 3 or more; bulk's hour needs one
        assert urgent["target"] >= 3 and urgent["target"] > bulk["target"], (urgent, bulk)
        assert "3s" in urgent["reason"] or "max 3" in urgent["reason"], urgent["reason"]


def test_a_supervisor_whose_queues_have_no_level_balances_like_time(start_daemon, redis):
    daemon = start_daemon(CONFIG.replace("STRATEGY", "latency").split("[slo.urgent]")[0])
    _warm_then_flood(daemon, redis)
    sup = wait_until(lambda: (s := daemon.supervisor("web")) and s["queues"]["bulk"]["target"] >= 5 and s,
                     timeout=10, interval=0.05, what="bulk to get the larger share")
    assert sup["queues"]["bulk"]["target"] > sup["queues"]["urgent"]["target"]
