"""[cron.NAME] and [maintenance]: each occurrence runs once across every master on one Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rq import Queue
from rq.job import Job

from conftest import horizonctl, wait_until
from horizond.core import cron
from horizond.core.config import ConfigError, parse

EVERY_SECOND = """
[cron.tick]
cron = "* * * * * *"
func = "cronjobs.tick"
queue = "qa"
args = ["t"]

[supervisors.alpha]
queues = ["qa"]
min_processes = 1
max_processes = 1
"""


def _entry(expr: str) -> cron.CronEntry:
    return cron.CronEntry(name="x", cron=expr, func="a.b")


# --- the rules (pure) ------------------------------------------------------------------

@given(st.floats(1.7e9, 1.9e9), st.sampled_from(["0 2 * * *", "*/5 * * * *", "* * * * * */7", "30 4 1 * *"]))
def test_the_previous_occurrence_is_at_or_before_now_and_the_next_after(now, expr):
    entry = _entry(expr)
    before, after = cron.previous(entry, now), cron.following(entry, now)
    assert before <= now < after
    assert cron.following(entry, before) == after or cron.following(entry, before) <= now  # nothing skipped


@given(st.floats(1.7e9, 1.9e9), st.integers(0, 50))
def test_an_occurrence_is_due_once_and_missed_ones_are_counted_not_run(start, outage_minutes):
    entry = _entry("* * * * *")
    last = cron.previous(entry, start)
    now = last + 60 * outage_minutes + 30
    due = cron.due(entry, last, now)
    if outage_minutes == 0:
        assert due.occurrence is None
    else:
        assert due.occurrence == cron.previous(entry, now) and due.missed == outage_minutes - 1
        assert cron.due(entry, due.occurrence, now).occurrence is None  # claimed: not due again
    assert cron.due(entry, None, now).first and cron.due(entry, None, now).occurrence is None


def test_bad_cron_tables_are_refused_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        parse('[supervisors.a]\n[cron.x]\ncron = "0 25 * * *"\nfunc = "app.jobs.x"\n'
              '[cron.y]\ncron = "0 2 * * *"\nfunc = "a.b"\ntimezone = "Nowhere/Town"\n'
              '[cron.maintenance]\ncron = "0 2 * * *"\nfunc = "a.b"\n[maintenance]\nprune_failed_hours = 0\n', "t.toml")
    text = str(caught.value)
    for named in ("[cron.x] key 'cron'", "[cron.y] key 'timezone'", "[cron] key 'maintenance'",
                  "[maintenance] key 'prune_failed_hours'"):
        assert named in text, text


# --- real masters ----------------------------------------------------------------------

def test_two_masters_on_one_redis_enqueue_each_occurrence_exactly_once(start_daemon, redis):
    """Every master claims every entry; the WATCH/MULTI claim lets exactly one win each second."""
    first = start_daemon(EVERY_SECOND + '[fleet]\nnode = "one"\n')
    second = start_daemon(EVERY_SECOND + '[fleet]\nnode = "two"\n')
    first.wait_ready({"alpha": 1})
    second.wait_ready({"alpha": 1})
    nodes = json.loads(horizonctl("nodes", "--json", socket_path=first.socket).stdout)
    assert sorted(n["node"] for n in nodes) == ["one", "two"]  # both live: both race for every second
    wait_until(lambda: redis.llen("test:cron:t") >= 6, timeout=20, what="6 occurrences run")
    ids = [i.decode() for i in redis.lrange("test:cron:t", 0, -1)]
    assert len(ids) == len(set(ids)), f"an occurrence ran twice: {ids}"
    seconds = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "an occurrence was skipped"
    claimed_by = {Job.fetch(i, connection=redis).origin for i in ids}
    assert claimed_by == {"qa"}
    claimers = {json.loads(horizonctl("cron", "--json", socket_path=d.socket).stdout)[0]["last_node"]
                for d in (first, second)}
    assert len(claimers) == 1 and claimers.pop().split(":")[1] in {str(first.proc.pid), str(second.proc.pid)}
    shown = json.loads(horizonctl("cron", "--json", socket_path=first.socket).stdout)
    assert shown[0]["name"] == "tick" and shown[0]["last_job"] and shown[0]["next"] > shown[0]["last"]


def test_maintenance_prunes_failed_jobs_older_than_its_hours_once(start_daemon, redis):
    queue = Queue("qa", connection=redis)
    old, recent = queue.enqueue("cronjobs.tick", "x"), queue.enqueue("cronjobs.tick", "y")
    for job, age in ((old, 7200), (recent, 60)):
        job.ended_at = datetime.fromtimestamp(time.time() - age, UTC)
        job.save()
        queue.remove(job)
        queue.failed_job_registry.add(job, ttl=86400)
    daemon = start_daemon(EVERY_SECOND.replace('[cron.tick]', '[maintenance]\ncron = "* * * * * *"\n'
                                               'prune_failed_hours = 1\n\n[cron.tick]'))
    daemon.wait_ready({"alpha": 1})
    wait_until(lambda: old.id not in queue.failed_job_registry.get_job_ids(), timeout=15,
               what="the 2 h old failed job pruned")
    assert recent.id in queue.failed_job_registry.get_job_ids()
    done = wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "maintenance_done"],
                      what="the maintenance_done log line")
    assert done[0]["pruned_failed"] == 1


def test_junk_under_a_cron_key_restarts_its_clock_and_the_master_lives_on(start_daemon, redis):
    redis.hset("horizond:cron:tick", mapping={"last": "not-a-number", "at": "x"})
    daemon = start_daemon(EVERY_SECOND)
    daemon.wait_ready({"alpha": 1})
    wait_until(lambda: redis.llen("test:cron:t") >= 2, timeout=10, what="the entry running again")
    assert float(redis.hget("horizond:cron:tick", "last")) > 0
    assert json.loads(horizonctl("status", "--json", socket_path=daemon.socket).stdout)["state"] == "running"
