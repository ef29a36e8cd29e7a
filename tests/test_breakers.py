"""[breakers.NAME]: failures open a breaker that holds its queues (no tries spent), a half-open
probe decides, the cooldown doubles; operators force it; status, health and /metrics show it."""

from __future__ import annotations

import json

import pytest
from rq import Queue

from conftest import free_port, horizonctl, sample, scrape, wait_until
from horizond.core import breakers
from horizond.core.config import ConfigError, parse

CONFIG = """
[notify]
command = ["sh", "-c", "cat >> {notes}; echo >> {notes}"]

[breakers.partner]
queues = ["partner*"]
failures = 3
window = 30
cooldown = 2
max_cooldown = 8
exceptions = ["ConnectionError"]

[supervisors.alpha]
queues = ["partner-api", "other"]
min_processes = 2
max_processes = 2
balance = "off"
tries = 1
"""


def _breaker(daemon) -> dict:
    [row] = json.loads(horizonctl("breakers", "--json", socket_path=daemon.socket).stdout)
    return row


def test_covering_and_counting_follow_the_table():
    b = breakers.Breaker("p", ("partner*", "sms"), 3, exceptions=("ConnectionError",))
    assert b.covers("partner-api") and b.covers("sms") and not b.covers("emails")
    assert b.counts(("PartnerDown", "ConnectionError", "OSError")) and not b.counts(("ValueError",))
    states = {"p": {"state": "open"}}
    assert breakers.held_queues((b,), states, ("partner-api", "emails")) == {"partner-api"}
    assert breakers.held_queues((b,), {"p": {"state": "half_open", "probe": ""}}, ("partner-api",)) == set()
    assert breakers.held_queues((b,), {"p": {"state": "half_open", "probe": "j1"}}, ("partner-api",)) == {"partner-api"}


def test_bad_breakers_are_refused_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        parse('[supervisors.a]\n[breakers.x]\nqueues = ["q"]\nfailures = 3\ncooldown = 60\nmax_cooldown = 10\n'
              '[breakers.y]\nfailures = 2\n', "t.toml")
    assert "[breakers.x] key 'max_cooldown'" in str(caught.value)
    assert "[breakers.y] key 'queues'" in str(caught.value)


def test_a_breaker_opens_holds_its_queues_probes_and_closes(start_daemon, redis, tmp_path):
    notes = tmp_path / "notes"
    daemon = start_daemon(CONFIG.format(notes=notes))
    daemon.wait_ready({"alpha": 2})
    partner, other = Queue("partner-api", connection=redis), Queue("other", connection=redis)
    redis.set("test:partner:down", 1)
    for i in range(10):
        partner.enqueue("breakerjobs.call_partner", i)
    wait_until(lambda: (r := _breaker(daemon))["state"] == "open" and r, timeout=15, what="the breaker to open")
    attempts = redis.llen("test:partner:attempts")
    assert 3 <= attempts <= 4  # the third failure opened it; at most the other worker's job in flight
    other.enqueue("breakerjobs.other", "runs")  # a queue no breaker covers keeps flowing
    wait_until(lambda: redis.llen("test:other:done") == 1, what="the other queue's job")
    assert redis.llen("test:partner:attempts") == attempts and partner.count == 10 - attempts  # held, no tries spent
    health = json.loads(horizonctl("health", "--json", socket_path=daemon.socket).stdout)
    assert health["status"] == "yellow" and any(i["name"] == "breakers" for i in health["indicators"])
    wait_until(lambda: notes.exists() and "breaker_open" in notes.read_text(), what="[notify] told of the opening")

    # half-open after 2 s: one probe, which fails: open again with the cooldown doubled
    wait_until(lambda: redis.llen("test:partner:attempts") == attempts + 1, timeout=10, what="one probe")
    wait_until(lambda: (r := _breaker(daemon))["state"] == "open" and r["cooldown"] == 4 and r, timeout=10,
                what="reopened with a 4 s cooldown")
    assert redis.llen("test:partner:attempts") == attempts + 1  # one probe, not a burst

    # the partner is back: the next probe succeeds, the breaker closes, the held jobs all run
    redis.delete("test:partner:down")
    failed = attempts + 1  # the failed probe too
    wait_until(lambda: redis.llen("test:partner:done") == 10 - failed, timeout=20, what="the held jobs to run")
    wait_until(lambda: _breaker(daemon)["state"] == "closed", what="the next sample to see it closed")
    assert partner.failed_job_registry.count == failed  # only the jobs that ran and failed: no try spent waiting
    assert redis.llen("test:partner:attempts") == 10  # each job ran once


def test_an_operator_forces_a_breaker_open_and_closed(start_daemon, redis, tmp_path):
    port = free_port()
    daemon = start_daemon(CONFIG.format(notes=tmp_path / "notes") + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    daemon.wait_ready({"alpha": 2})
    out = horizonctl("breaker", "open", "partner", socket_path=daemon.socket)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: _breaker(daemon)["state"] == "open", what="forced open")
    partner = Queue("partner-api", connection=redis)
    partner.enqueue("breakerjobs.call_partner", "x")
    wait_until(lambda: sample(scrape(port)[1], "horizon_breaker_state", breaker="partner") == 2.0,
               what="/metrics to show the breaker open")
    wait_until(lambda: _breaker(daemon)["forced"], what="the forced flag")
    assert redis.llen("test:partner:attempts") == 0 and partner.count == 1  # forced open stays open
    horizonctl("breaker", "close", "partner", socket_path=daemon.socket)
    wait_until(lambda: redis.llen("test:partner:done") == 1, timeout=10, what="the job after the close")
    bad = horizonctl("breaker", "open", "nope", socket_path=daemon.socket)
    assert bad.returncode != 0 and "unknown breaker 'nope'" in bad.stderr


def test_junk_in_a_breakers_hash_reads_as_closed_and_the_master_lives_on(start_daemon, redis, tmp_path):
    redis.hset("horizond:breaker:partner", mapping={"state": "bogus", "until": "x", "cooldown": "nan?",
                                                    "opened_at": "y"})
    daemon = start_daemon(CONFIG.format(notes=tmp_path / "notes"))
    daemon.wait_ready({"alpha": 2})
    row = wait_until(lambda: (r := _breaker(daemon)).get("state") == "closed" and r, what="a sample of the junk")
    assert row["cooldown"] == 2.0
    Queue("partner-api", connection=redis).enqueue("breakerjobs.call_partner", "ok")
    wait_until(lambda: redis.llen("test:partner:done") == 1, what="its queue flowing")


def test_an_operator_pauses_one_queue_on_every_node_and_continues_it(start_daemon, redis):
    body = '[supervisors.alpha]\nqueues = ["qa", "qb"]\nmin_processes = 2\nmax_processes = 2\nbalance = "off"\n'
    first = start_daemon(body + '[fleet]\nnode = "one"\n')
    second = start_daemon(body + '[fleet]\nnode = "two"\n')
    first.wait_ready({"alpha": 2})
    second.wait_ready({"alpha": 2})
    out = horizonctl("queue", "pause", "qb", socket_path=first.socket)
    assert out.returncode == 0 and "paused on every node" in out.stdout
    wait_until(lambda: all(json.loads(horizonctl("status", "--json", socket_path=d.socket).stdout)["paused_queues"]
                           == ["qb"] for d in (first, second)), what="both masters to hold qb")
    held = [Queue("qb", connection=redis).enqueue("breakerjobs.other", f"b{i}") for i in range(4)]
    Queue("qa", connection=redis).enqueue("breakerjobs.other", "a")
    try:
        wait_until(lambda: redis.lrange("test:other:done", 0, -1) == [b"a"], what="qa's job, while qb is held")
    except AssertionError as exc:  # say which: qa's job never ran, or a held qb job ran too
        raise AssertionError(f"{exc}; done: {redis.lrange('test:other:done', 0, -1)}; qb left: "
                             f"{redis.llen('rq:queue:qb')}") from None
    assert all(j.get_status(refresh=True) == "queued" for j in held)  # not one taken on either node
    horizonctl("queue", "continue", "qb", socket_path=second.socket)
    wait_until(lambda: redis.llen("test:other:done") == 5, what="qb's jobs after continue")


@pytest.mark.parametrize("worker_class", ["", 'worker_class = "rq.worker.SimpleWorker"\n'], ids=["lean", "stock"])
def test_a_queue_paused_while_the_worker_is_in_a_job_is_left_alone_after_that_job(worker_class, start_daemon, redis):
    """A busy worker reads the master's "hold" only between jobs. The lean worker's job end also
    takes the next job (one round trip less), and took it with what it knew before the job: a
    job of the queue paused meanwhile (seen under load: done [a, b0] while both masters said qb
    was paused). Here the pause lands exactly while the worker is inside qa's job."""
    body = '[supervisors.alpha]\nqueues = ["qa", "qb"]\nmin_processes = 1\nmax_processes = 1\nbalance = "off"\n'
    daemon = start_daemon(body + worker_class)
    daemon.wait_ready({"alpha": 1})
    Queue("qa", connection=redis).enqueue("breakerjobs.wait_for_release", "a")
    wait_until(lambda: redis.llen("test:other:started") == 1, what="the worker inside qa's job")
    assert horizonctl("queue", "pause", "qb", socket_path=daemon.socket).returncode == 0
    wait_until(lambda: json.loads(horizonctl("status", "--json", socket_path=daemon.socket).stdout)["paused_queues"]
               == ["qb"], what="the master to hold qb")
    held = [Queue("qb", connection=redis).enqueue("breakerjobs.other", f"b{i}") for i in range(3)]
    redis.rpush("test:release", "go")

    def idle_after_a():
        workers = daemon.status()["supervisors"][0]["workers"]
        return b"a" in redis.lrange("test:other:done", 0, -1) and [w["state"] for w in workers] == ["idle"]

    wait_until(idle_after_a, what="the worker idle after qa's job")  # a qb job taken with a's end runs first
    assert redis.lrange("test:other:done", 0, -1) == [b"a"]
    assert all(j.get_status(refresh=True) == "queued" for j in held) and redis.llen("rq:queue:qb") == 3
    Queue("qa", connection=redis).enqueue("breakerjobs.other", "c")
    wait_until(lambda: redis.lrange("test:other:done", 0, -1) == [b"a", b"c"], what="qa flowing on")


@pytest.mark.parametrize("worker_class", ["", 'worker_class = "rq.worker.SimpleWorker"\n'], ids=["lean", "stock"])
def test_an_idle_worker_blocked_on_a_queue_just_paused_does_not_take_its_next_job(worker_class, start_daemon, redis):
    """A worker of one queue waits for jobs in a long BLMOVE on it, and Redis hands the queue's
    next job to that BLMOVE whatever the worker was told meanwhile: a job enqueued after status
    said the queue was paused started at once. The master now unblocks it until it says it
    knows; the job must wait for `continue`."""
    body = '[supervisors.alpha]\nqueues = ["qs"]\nmin_processes = 1\nmax_processes = 1\nbalance = "off"\n'
    daemon = start_daemon(body + worker_class)
    daemon.wait_ready({"alpha": 1})
    assert horizonctl("queue", "pause", "qs", socket_path=daemon.socket).returncode == 0
    wait_until(lambda: json.loads(horizonctl("status", "--json", socket_path=daemon.socket).stdout)["paused_queues"]
               == ["qs"], what="the master to hold qs")
    job = Queue("qs", connection=redis).enqueue("breakerjobs.other", "s")
    # Redis hands a pushed job to a blocked BLMOVE before it serves the next command: still there?
    assert redis.lrange("rq:queue:qs", 0, -1) == [job.id.encode()], "a worker blocked on qs took it"
    assert horizonctl("queue", "continue", "qs", socket_path=daemon.socket).returncode == 0
    wait_until(lambda: job.get_status(refresh=True) == "finished", what="the job after continue")
