"""Batches are RQ groups: `horizonctl batches` and `batch show` give their progress."""

from __future__ import annotations

import json

from rq import Queue
from rq.group import Group
from rq.job import JobStatus

from conftest import horizonctl, wait_until

SUPERVISOR = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
max_processes = 2
"""


def test_batch_progress_counts_finished_failed_and_pending_members(start_daemon, redis):
    daemon = start_daemon(SUPERVISOR)
    daemon.wait_ready({"alpha": 2})
    queue = Queue("qa", connection=redis)
    group = Group.create(connection=redis, name="nightly-sync")
    jobs = group.enqueue_many(queue, [Queue.prepare_data("testjobs.record", (f"b{i}",)) for i in range(6)]
                              + [Queue.prepare_data("testjobs.fail", ("bf",))]
                              + [Queue.prepare_data("testjobs.block", (60, "held"))])
    wait_until(lambda: sum(j.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED) for j in jobs) == 7,
               timeout=20, what="7 of 8 members to end")
    shown = json.loads(horizonctl("batch", "show", "nightly-sync", "--json", socket_path=daemon.socket).stdout)
    assert (shown["total"], shown["finished"], shown["failed"], shown["pending"], shown["complete"]) == \
        (8, 6, 1, 1, False)
    assert shown["failed_ids"] == [jobs[6].id] and shown["progress"] == 87.5
    listed = json.loads(horizonctl("batches", "--json", socket_path=daemon.socket).stdout)
    assert [b["name"] for b in listed["batches"]] == ["nightly-sync"] and listed["total"] == 1
    text = horizonctl("batches", socket_path=daemon.socket).stdout
    assert "nightly-sync" in text and "87.5" in text
    missing = horizonctl("batch", "show", "nope", socket_path=daemon.socket)
    assert missing.returncode != 0 and "no batch (RQ group) named 'nope'" in missing.stderr
