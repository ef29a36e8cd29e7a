"""Every private RQ name horizond relies on still exists in the installed RQ.

The lean worker, the recovery of a dead worker's job and the scheduler wrapper reach into
RQ internals (pyproject pins rq to the versions CI proves). An RQ upgrade that renames one
must fail here, by name, instead of as a worker that cannot start or a job left half-settled.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from redis.connection import Connection
from rq.job import Job
from rq.queue import Queue
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker, Worker

from horizond.worker.leanworker import LeanWorker
from horizond.worker.rqworker import HorizonWorkerMixin

HORIZOND = Path(__file__).resolve().parent.parent / "horizond"

# (owner, name, where horizond uses it). Owners are classes; "instance" names are checked
# on a live object, since RQ sets them in __init__.
PRIVATE_NAMES = [
    ("Job", "_status", "leanworker.py: the job's status, set in memory beside the start/success transaction"),
    ("Job", "_result", "leanworker.py: the return value, as RQ keeps it for Result.create"),
    ("Job", "_dependency_ids", "leanworker.py: whether the success transaction expires the dependencies key"),
    ("Job", "_handle_failure", "recovery.py: fail a dead worker's job as RQ's worker would"),
    ("Queue", "_enqueue_job", "recovery.py: put a dead worker's job back at the front of its queue"),
    ("SimpleWorker", "_finalize_success", "leanworker.py: RQ's success path for Retry, repeats, groups"),
    ("SimpleWorker", "_stopped_job_id", "leanworker.py: a job stopped on request takes RQ's failure path"),
    ("SimpleWorker", "_ordered_queues", "leanworker.py: the queues to dequeue from, in RQ's order"),
    ("SimpleWorker", "_state", "leanworker.py: the worker state RQ last wrote, to skip rewriting it"),
    ("SimpleWorker", "_stop_requested", "rqworker.py, child.py: the warm-shutdown flag RQ's loop reads"),
    ("SimpleWorker", "_shutdown_requested_date", "rqworker.py: when the stop was asked, as RQ records it"),
    ("Worker", "_horse_pid", "rqworker.py: a forking worker_class's horse, reported to the master"),
    ("RQScheduler", "_queue_names", "worker.py: the scheduler's queues, to tell whether it holds all locks"),
    ("Connection", "_sock", "master.py: the socket of each Redis connection, kept open across fork"),
]
OWNERS = {"Job": Job, "Queue": Queue, "SimpleWorker": SimpleWorker, "Worker": Worker, "RQScheduler": RQScheduler,
          "Connection": Connection}


@pytest.fixture(scope="module")
def instances(redis_server):
    """One live object of each owner: RQ sets most of these names in __init__."""
    from redis import Redis

    connection = Redis.from_url(redis_server.url)
    objects = {"Job": Job(connection=connection), "Queue": Queue("private-names", connection=connection),
               "SimpleWorker": SimpleWorker(["private-names"], connection=connection),
               "Worker": Worker(["private-names"], connection=connection),
               "RQScheduler": RQScheduler(["private-names"], connection=connection),
               "Connection": Connection(port=redis_server.port)}
    yield objects
    connection.close()


@pytest.mark.parametrize(("owner", "name", "use"), PRIVATE_NAMES, ids=[f"{o}.{n}" for o, n, _ in PRIVATE_NAMES])
def test_the_private_rq_name_horizond_uses_exists(instances, owner, name, use):
    assert hasattr(OWNERS[owner], name) or hasattr(instances[owner], name), \
        f"installed RQ has no {owner}.{name}, which horizond uses ({use}): adapt horizond before widening the rq pin"


def test_every_listed_name_is_still_used_by_horizond():
    """A name horizond stopped using is taken off the list, so the list stays the truth."""
    source = "\n".join(path.read_text() for path in HORIZOND.rglob("*.py"))
    unused = [f"{o}.{n}" for o, n, _ in PRIVATE_NAMES if not re.search(rf"\.{n}\b", source)]
    assert not unused, f"no longer used by horizond, remove from PRIVATE_NAMES: {unused}"


def test_every_private_name_horizond_reads_on_rq_objects_is_listed():
    """`job._x`, `queue._x`, `worker._x`, `c._sock`: a new reach into RQ gets listed here."""
    source = "\n".join(path.read_text() for path in HORIZOND.rglob("*.py"))
    used = set(re.findall(r"\b(?:job|queue|worker|c)\._([a-z][a-z_]*)\b", source))
    listed = {name.lstrip("_") for _, name, _ in PRIVATE_NAMES}
    assert used <= listed, f"private RQ names used but not listed in PRIVATE_NAMES: {sorted(used - listed)}"


@pytest.mark.parametrize(("cls", "base"), [(LeanWorker, SimpleWorker), (HorizonWorkerMixin, Worker)],
                         ids=["LeanWorker", "HorizonWorkerMixin"])
def test_every_rq_method_horizond_overrides_exists_with_its_parameters(cls, base):
    """The lean worker and the mixin override RQ worker methods: each must still exist in
    RQ, and RQ must not have added a parameter the override would not accept."""
    problems = []
    for name, member in vars(cls).items():
        if not callable(member) or name.startswith("__") or name.startswith(("_lean", "_horizon", "horizon")):
            continue
        original = getattr(base, name, None)
        if original is None:
            problems.append(f"{base.__name__}.{name} is gone")
            continue
        ours, theirs = inspect.signature(member).parameters, inspect.signature(original).parameters
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in ours.values()):
            continue
        missing = [p for p in theirs if p not in ours]
        if missing:
            problems.append(f"{base.__name__}.{name} takes {missing}, which {cls.__name__}.{name} does not")
    assert not problems, "; ".join(problems)
