"""The fleet leader, budget and dead nodes, with real masters (distinct [fleet] node ids) on one
test Redis: heartbeat 0.3 s, so the lease is 0.9 s and a grant lives 0.6 s."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import psutil
import pytest
from rq import Queue
from rq.job import Job, JobStatus

from conftest import Daemon, wait_until
from horizond.fleet import leasekeys as keys
from horizond.fleet.budget import BudgetMember, Identity

HEARTBEAT = 0.3
LEASE = 3 * HEARTBEAT
SLACK = 1.5  # a loaded 2-core machine: scheduling delays on top of the stated bounds
P = "horizond"


@pytest.fixture
def fleet(tmp_path, redis_url):
    started: list[Daemon] = []

    def start(body: str, names=("n1", "n2", "n3")) -> dict[str, Daemon]:
        out = {}
        for name in names:
            (tmp_path / name).mkdir()
            out[name] = Daemon(tmp_path / name, redis_url, body,
                               extra_master=f'[fleet]\nnode = "{name}"\nheartbeat = {HEARTBEAT}\n')
            started.append(out[name])
        return out

    yield start
    for daemon in started:
        try:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        daemon.cleanup()


def _leader(redis) -> str | None:
    value = redis.get(keys.leader_key(P))
    return value.decode().split(":", 1)[0] if value else None


def _workers(daemon: Daemon, sup: str) -> list[int]:
    """The master's live worker processes of `sup`, seen by the kernel (not by the master)."""
    try:
        children = psutil.Process(daemon.proc.pid).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            title = " ".join(child.cmdline())  # horizond's title when idle, RQ's ("rq:worker:NAME ...") in a job
            mine = title.startswith(f"horizond: worker {sup} ") or (title.startswith("rq:worker:horizond:")
                                                                    and title.split(" ", 1)[0].endswith(f":{sup}:"))
            if mine and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.Error:
            pass
    return out


def _events(daemon: Daemon, name: str) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == name]


BURSTY = """
[supervisors.w]
queues = ["fq"]
min_processes = 0
max_processes = 4
balance_max_shift = 4
balance_cooldown = 0.3
fleet_max_processes = 5
auto_scaling_strategy = "STRATEGY"

[slo.fq]  # "latency": 60 jobs of 0.25 s within 1 s would need 15 processes per node
throughput = 600
max_latency = 1
success_rate = 99
"""


@pytest.mark.parametrize("strategy", ["time", "latency"])
def test_under_a_bursty_load_the_fleet_never_runs_more_than_its_budget(fleet, redis, strategy):
    nodes = fleet(BURSTY.replace("STRATEGY", strategy))
    wait_until(lambda: _leader(redis), what="a leader")
    queue = Queue("fq", connection=redis)
    peak, samples, deadline = 0, 0, time.monotonic() + 10
    burst_at = time.monotonic()
    while time.monotonic() < deadline:
        if time.monotonic() >= burst_at:
            with redis.pipeline() as pipe:
                for i in range(60):
                    queue.enqueue("testjobs.sleep_then_record", 0.25, f"b{samples}-{i}", pipeline=pipe)
                pipe.execute()
            burst_at = time.monotonic() + 3.5  # bursts (15 s of work), then the workers drain and shrink
        total = sum(len(_workers(d, "w")) for d in nodes.values())
        peak, samples = max(peak, total), samples + 1
        assert total <= 5, f"fleet total {total} over fleet_max_processes 5"
        time.sleep(0.02)
    assert samples > 100
    assert peak >= 4, f"the budget was never used (peak {peak}): the test would not see a breach"
    grants = [json.loads(redis.get(keys.grant_key(P, n)) or "{}").get("caps", {}).get("w", 0) for n in nodes]
    assert sum(grants) <= 5


IDLE = """
[supervisors.w]
queues = ["fq"]
min_processes = 2
max_processes = 2
fleet_max_processes = 6
"""


def test_the_leader_sigkilled_another_grants_within_the_lease_and_a_heartbeat(fleet, redis):
    nodes = fleet(IDLE)
    old = wait_until(lambda: _leader(redis), what="a leader")
    old_epoch = int(redis.get(keys.epoch_key(P)))
    for daemon in nodes.values():
        wait_until(lambda d=daemon: len(_workers(d, "w")) == 2, timeout=15, what="2 workers per node")
    nodes[old].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()

    def new_grant():
        leader = _leader(redis)
        if leader in (None, old):
            return None
        grant = redis.get(keys.grant_key(P, leader))
        return grant and json.loads(grant)["token"] > old_epoch

    wait_until(new_grant, timeout=10, interval=0.02, what="a new leader's grant")
    took = time.monotonic() - killed
    assert took <= LEASE + HEARTBEAT + SLACK, f"takeover took {took:.2f}s"
    assert int(redis.get(keys.epoch_key(P))) == old_epoch + 1  # the fencing token moved on once


def test_a_clean_stop_hands_the_lease_over_at_once(fleet, redis):
    nodes = fleet(IDLE, names=("n1", "n2"))
    old = wait_until(lambda: _leader(redis), what="a leader")
    nodes[old].signal(signal.SIGTERM)
    assert nodes[old].wait_exit(30) == 0
    stopped = time.monotonic()
    wait_until(lambda: _leader(redis) not in (None, old), timeout=5, interval=0.02, what="a successor")
    assert time.monotonic() - stopped < LEASE  # released, not expired
    assert _events(nodes[old], "fleet_leader_released")


def test_a_node_paused_past_its_grant_does_not_grow_when_resumed_before_a_new_grant(fleet, redis):
    nodes = fleet(IDLE.replace("fleet_max_processes = 6", "fleet_max_processes = 4"), names=("n1", "n2"))
    leader = wait_until(lambda: _leader(redis), what="a leader")
    name = next(n for n in nodes if n != leader)
    node = nodes[name]
    wait_until(lambda: len(_workers(node, "w")) == 2, timeout=15, what="2 workers")
    node.proc.send_signal(signal.SIGSTOP)
    os.kill(_workers(node, "w")[0], signal.SIGKILL)  # its slot would refill at once on a live grant
    time.sleep(2 * LEASE)  # past its grant (0.6 s) and its entry (0.9 s): declared dead too
    mark = len(node.log_events())
    node.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: len(_workers(node, "w")) == 2, timeout=10, what="the slot refilled under a new grant")
    after = node.log_events()[mark:]
    events = [e.get("event") for e in after]
    assert "fleet_grant_received" in events and "worker_started" in events, events
    assert events.index("fleet_grant_received") < events.index("worker_started"), events
    assert "fleet_declared_dead" in events  # it learnt the leader buried it


SETTLE = """
[supervisors.again]
queues = ["fr"]
min_processes = 1
max_processes = 1
tries = 2

[supervisors.once]
queues = ["fo"]
min_processes = 1
max_processes = 1
tries = 1
"""


def test_a_node_sigkilled_mid_job_has_its_jobs_settled_by_the_leader(fleet, redis):
    nodes = fleet(SETTLE, names=("n1", "n2"))
    leader = wait_until(lambda: _leader(redis), what="a leader")
    for daemon in nodes.values():
        daemon.wait_ready({"again": 1, "once": 1})
    jobs = [Queue(q, connection=redis).enqueue("testjobs.block", 120, f"{q}{i}") for q in ("fr", "fo") for i in (1, 2)]
    wait_until(lambda: redis.hlen("test:started") == 4, timeout=15, what="every worker busy")
    victim = next(n for n in nodes if n != leader)
    held = set(nodes[victim].worker_pids())
    theirs = [j for j in jobs if int(redis.hget("test:started", j.args[1])) in held]
    assert len(theirs) == 2
    nodes[victim].proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()

    def settled():
        return all(j.get_status(refresh=True) != JobStatus.STARTED for j in theirs)

    wait_until(settled, timeout=15, interval=0.05, what="the dead node's jobs settled")
    took = time.monotonic() - killed
    assert took <= 3 * HEARTBEAT + LEASE + SLACK, f"settled after {took:.2f}s"
    for job in theirs:
        job = Job.fetch(job.id, connection=redis)
        if job.origin == "fr":  # tries = 2: back in its queue
            assert job.get_status() == JobStatus.QUEUED and job.id in Queue("fr", connection=redis).job_ids
        else:  # tries = 1: failed, with the cause
            assert job.get_status() == JobStatus.FAILED
            assert "stopped heartbeating" in (job.latest_result().exc_string or "")
    ours = [j for j in jobs if j not in theirs]
    assert all(j.get_status(refresh=True) == JobStatus.STARTED for j in ours)  # the live node's are untouched
    dead = json.loads(redis.get(keys.dead_key(P, victim)))
    assert sorted(dead["jobs"]) == sorted(j.id for j in theirs) and dead["by"] == leader
    assert _events(nodes[leader], "fleet_node_dead")


def test_a_stale_leaders_grant_is_refused_by_redis_and_by_the_node(redis):
    lease, epoch = keys.leader_key(P), keys.epoch_key(P)
    first = redis.eval(keys.LEASE, 2, lease, epoch, "a:1:", 900, 0)
    assert first[0] == 2 and int(first[1]) == 1  # taken over: epoch 1
    assert redis.eval(keys.LEASE, 2, lease, epoch, "b:2:", 900, 0)[0] == 0  # held by a
    assert redis.eval(keys.RELEASE, 1, lease, "b:2:") == 0  # only the holder releases
    redis.pexpire(lease, 1)  # a's lease runs out (a paused past it)
    time.sleep(0.05)
    assert redis.eval(keys.LEASE, 2, lease, epoch, "b:2:", 900, 0)[:2] == [2, 2]
    grant = json.dumps({"token": 1, "seq": 99, "ttl": 0.6, "caps": {"w": 50}})
    # a, still believing it leads under epoch 1, writes: refused, nothing written
    assert redis.eval(keys.GRANT, 3, lease, epoch, keys.grant_key(P, "x"), "a:1:", 1, 600, grant) == 0
    assert redis.get(keys.grant_key(P, "x")) is None
    # a node that has seen epoch 2 ignores a grant with token 1 (a duplicate of the stale token)
    member = BudgetMember(Identity("x", "h", 1, None), P, HEARTBEAT, epoch_seen=2)
    member.take_grant(grant.encode(), time.monotonic())
    assert member.grant is None and not member.grant_valid
    good = json.dumps({"token": 2, "seq": 1, "ttl": 0.6, "caps": {"w": 3}})
    member.take_grant(good.encode(), time.monotonic())
    assert member.grant_valid and member.grant.caps == {"w": 3}
    member.take_grant(grant.encode(), time.monotonic())  # replayed later: still refused
    assert member.grant.caps == {"w": 3}
    # and after Redis lost its data, the epoch never goes back below what a node saw
    redis.delete(epoch, lease)
    assert redis.eval(keys.LEASE, 2, lease, epoch, "c:3:", 900, 7)[:2] == [2, 8]


def test_the_stale_grant_is_logged(caplog):
    member = BudgetMember(Identity("x", "h", 1, None), P, HEARTBEAT, epoch_seen=3)
    with caplog.at_level(logging.WARNING, logger="horizond.fleet"):
        member.take_grant(json.dumps({"token": 2, "seq": 5, "ttl": 0.6, "caps": {}}).encode(), 0.0)
    assert [r.event for r in caplog.records] == ["fleet_stale_grant"]


RETURNING = """
[supervisors.again]
queues = ["fr"]
min_processes = 1
max_processes = 1
tries = 2
"""


def test_a_node_back_from_the_dead_stops_its_copy_of_a_settled_job_and_says_so(fleet, redis):
    nodes = fleet(RETURNING, names=("n1", "n2"))
    leader = wait_until(lambda: _leader(redis), what="a leader")
    for daemon in nodes.values():
        daemon.wait_ready({"again": 1})
    jobs = [Queue("fr", connection=redis).enqueue("testjobs.block", 4, f"r{i}") for i in (1, 2)]
    wait_until(lambda: redis.hlen("test:started") == 2, timeout=15, what="both workers busy")
    victim = next(n for n in nodes if n != leader)
    worker = nodes[victim].worker_pids().pop()
    job = next(j for j in jobs if int(redis.hget("test:started", j.args[1])) == worker)
    nodes[victim].proc.send_signal(signal.SIGSTOP)  # the master only: its worker runs on
    wait_until(lambda: redis.get(keys.dead_key(P, victim)), timeout=5, interval=0.02, what="the victim declared dead")
    assert job.get_status(refresh=True) == JobStatus.QUEUED  # retried: the leader's worker takes it next
    nodes[victim].proc.send_signal(signal.SIGCONT)
    wait_until(lambda: _events(nodes[victim], "fleet_job_settled_elsewhere"), timeout=5, what="the copy stopped")
    stopped = _events(nodes[victim], "fleet_job_settled_elsewhere")[0]
    assert stopped["job_id"] == job.id and stopped["action"] == "killed"
    assert _events(nodes[victim], "fleet_declared_dead")[0]["jobs"] == [job.id]
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=20, what="the job run once")
    assert int(redis.hget("test:runs", job.args[1])) == 1  # the killed copy never finished
