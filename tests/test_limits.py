"""[limits."PATTERN"]: concurrency (through RQ 3's RateLimit registries) and start rates, enforced
when a job is about to start, over every worker of every master on one Redis."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from conftest import horizonctl, wait_until
from horizond.core import limits
from horizond.core.config import ConfigError, parse

TWO_MASTERS = """
[limits."partner-*"]
concurrency = 2

[limits.paced]
rate = [3, 2]

[supervisors.alpha]
queues = ["partner-a", "partner-b", "paced"]
min_processes = 3
max_processes = 3
balance = "off"
tries = 1
"""


def _spans(redis, tag) -> list[tuple[float, float, str]]:
    out = []
    for raw in redis.lrange(f"test:spans:{tag}", 0, -1):
        start, end, job_id = raw.decode().split(":", 2)
        out.append((float(start), float(end), job_id))
    return out


def _most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_a_queue_takes_its_exact_limit_else_the_first_matching_pattern():
    table = (limits.QueueLimit("web*", 1), limits.QueueLimit("webhooks", 2), limits.QueueLimit("*", 3))
    assert limits.limit_for(table, "webhooks").concurrency == 2
    assert limits.limit_for(table, "web-high").concurrency == 1
    assert limits.limit_for(table, "emails").concurrency == 3
    assert limits.limit_for(table[:2], "emails") is None


def test_bad_limits_are_refused_naming_the_table_and_key():
    with pytest.raises(ConfigError) as caught:
        parse('[supervisors.a]\n[limits."x*"]\nconcurrency = -1\n[limits.y]\nrate = [0, 60]\n'
              '[limits.z]\nburst = 3\n', "t.toml")
    text = str(caught.value)
    for named in ("[limits.\"x*\"] key 'concurrency'", "[limits.\"y\"] key 'rate'", "[limits.\"z\"] key 'burst'"):
        assert named in text, text


@pytest.mark.slow
def test_two_masters_never_exceed_a_limit_together_over_a_30_s_load(start_daemon, redis):
    first = start_daemon(TWO_MASTERS + '[fleet]\nnode = "one"\n')
    second = start_daemon(TWO_MASTERS + '[fleet]\nnode = "two"\n')
    first.wait_ready({"alpha": 3})
    second.wait_ready({"alpha": 3})
    queues = {name: Queue(name, connection=redis) for name in ("partner-a", "partner-b", "paced")}
    jobs: list[Job] = []
    began = time.monotonic()
    while time.monotonic() - began < 30:  # 30 s of steady arrivals, more than the limits let through
        jobs.append(queues["partner-a" if len(jobs) % 2 else "partner-b"].enqueue("limitjobs.timed", 0.2, "p"))
        if len(jobs) % 20 == 0:  # paced work comes in bursts of 5, more than 3 per 2 s
            jobs += [queues["paced"].enqueue("limitjobs.timed", 0.01, "r") for _ in range(5)]
        time.sleep(0.2)  # 5 partner jobs a second, under what 2 at once x 0.2 s let through
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs), timeout=120,
               interval=0.5, what="every limited job to finish")
    partner, paced = _spans(redis, "p"), _spans(redis, "r")
    assert len(partner) + len(paced) == len(jobs)  # each ran once: none lost, none twice
    assert len({j for _, _, j in partner + paced}) == len(jobs)
    assert _most_at_once(partner) == 2, "partner-* ran more than 2 at once, or never 2"
    starts = sorted(s for s, _, _ in paced)
    for i in range(len(starts) - 3):  # never 4 starts within 2 s
        assert starts[i + 3] - starts[i] >= 2.0 - 0.01, starts[i:i + 4]
    assert any(starts[i + 2] - starts[i] < 2.0 for i in range(len(starts) - 2)), "the rate never bound"
    assert not any(q.failed_job_registry.count for q in queues.values())  # tries = 1: no try spent


def test_a_job_over_the_concurrency_limit_waits_as_rq_rate_limited_then_runs(start_daemon, redis):
    daemon = start_daemon(TWO_MASTERS.replace("concurrency = 2", "concurrency = 1"))
    daemon.wait_ready({"alpha": 3})
    queue = Queue("partner-a", connection=redis)
    jobs = [queue.enqueue("limitjobs.timed", 1.0, "w") for _ in range(3)]
    waiting = wait_until(lambda: [j for j in jobs if j.get_status(refresh=True) == "rate_limited"], timeout=10,
                         what="a job waiting as rate_limited")
    assert redis.zcard("rq:rl:horizond:partner-*:allowed") == 1  # RQ's registry holds the one slot
    assert waiting[0].id.encode() in redis.zrange("rq:rl:horizond:partner-*:rate_limited", 0, -1)
    Queue("paced", connection=redis).enqueue("limitjobs.timed", 0.01, "r")
    status = wait_until(lambda: (s := json.loads(horizonctl("status", "--json", socket_path=daemon.socket).stdout))
                        ["start_rates"] and s["start_rates"][0]["started"] == 1 and s, what="status to sample limits")
    row = next(r for r in status["rate_limits"] if r["key"] == "horizond:partner-*")
    assert row["concurrency"] == 1 and row["slots_used"] == 1 and row["waiting"] >= 1
    assert status["start_rates"][0] == {"pattern": "paced", "allowed": 3, "per_seconds": 2.0, "started": 1}
    wait_until(lambda: all(j.get_status(refresh=True) == JobStatus.FINISHED for j in jobs), timeout=20,
               what="all three, one at a time")
    assert _most_at_once(_spans(redis, "w")) == 1
    assert redis.zcard("rq:rl:horizond:partner-*:allowed") == 0  # every slot released
