"""SIGHUP: apply exactly the difference, lose no job; refuse a bad file."""

from __future__ import annotations

import signal

from rq import Queue
from rq.job import JobStatus

from conftest import alive, wait_until

BEFORE = """
[supervisors.keep]
queues = ["qk"]
min_processes = 2

[supervisors.change]
queues = ["qc"]
min_processes = 1
timeout = 60

[supervisors.remove]
queues = ["qr"]
min_processes = 1
"""

AFTER = """
[supervisors.keep]
queues = ["qk"]
min_processes = 2

[supervisors.change]
queues = ["qc"]
min_processes = 2
timeout = 30

[supervisors.added]
queues = ["qn"]
min_processes = 1
"""


def test_sighup_applies_exactly_the_difference_without_losing_a_job(start_daemon, redis):
    daemon = start_daemon(BEFORE)
    before = daemon.wait_ready({"keep": 2, "change": 1, "remove": 1})
    pids = {s["name"]: {w["pid"] for w in s["workers"]} for s in before["supervisors"]}
    # jobs in flight on the changed and the removed supervisor when the reload lands
    in_flight = [Queue(q, connection=redis).enqueue("testjobs.sleep_then_record", 1.5, f"flight-{q}")
                 for q in ("qc", "qr")]
    wait_until(lambda: redis.hlen("test:started") == 2, what="both jobs to start")
    waiting = Queue("qr", connection=redis).enqueue("testjobs.record", "left-on-removed-queue")

    daemon.write_config(AFTER)
    daemon.signal(signal.SIGHUP)
    daemon.wait_ready({"keep": 2, "change": 2, "added": 1})
    # the changed supervisor's workers are all replaced (rolling) ...
    wait_until(lambda: not {w["pid"] for w in daemon.supervisor("change")["workers"] if w["state"] != "stopping"}
               & pids["change"], what="the changed supervisor's workers to be replaced")
    after = daemon.status()
    by_name = {s["name"]: s for s in after["supervisors"]}
    assert {w["pid"] for w in by_name["keep"]["workers"]} == pids["keep"]  # untouched
    for job in in_flight:  # ... but nothing in flight was killed
        wait_until(lambda job=job: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=10,
                   what=f"in-flight job {job.id} to finish")
    wait_until(lambda: not any(alive(p) for p in pids["remove"] | pids["change"]), what="old workers to leave")
    wait_until(lambda: "remove" not in {s["name"] for s in daemon.status()["supervisors"]}, what="removal")
    # the removed supervisor's queue keeps its job for whoever serves it next
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED
    # the new and changed supervisors work
    for q in ("qn", "qc", "qk"):
        Queue(q, connection=redis).enqueue("testjobs.record", f"after-{q}")
    wait_until(lambda: all(redis.hget("test:runs", f"after-{q}") == b"1" for q in ("qn", "qc", "qk")),
               what="jobs on the new supervisors")
    events = [e for e in daemon.log_events() if e.get("event") == "reload_applied"]
    assert events and events[-1]["added"] == ["added"] and events[-1]["removed"] == ["remove"]
    assert events[-1]["changed"] == ["change"]


def test_invalid_config_on_reload_keeps_the_running_one(start_daemon, redis):
    daemon = start_daemon(BEFORE)
    before = daemon.wait_ready({"keep": 2, "change": 1, "remove": 1})
    pids = {w["pid"] for s in before["supervisors"] for w in s["workers"]}
    daemon.write_config(BEFORE.replace("timeout = 60", "timout = 60"))
    daemon.signal(signal.SIGHUP)
    refused = wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "reload_refused"],
                         what="the reload to be refused")
    assert any("timout" in err and "supervisors.change" in err for err in refused[0]["errors"])
    status = daemon.status()
    assert {w["pid"] for s in status["supervisors"] for w in s["workers"]} == pids
    Queue("qc", connection=redis).enqueue("testjobs.record", "still-working")
    wait_until(lambda: redis.hget("test:runs", "still-working") == b"1", what="jobs to keep running")
