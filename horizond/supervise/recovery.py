"""Settle what a dead worker left in Redis: its job and its worker record.

The master knows which job a worker held (state channel), so when the worker
dies mid-job the job is retried or failed at once, under the same policy the
worker would have applied, instead of waiting for RQ's registry expiry.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import psutil
from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.utils import now as utcnow
from rq.utils import utcformat
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from horizond import sysutil
from horizond.core import jobopts, policy
from horizond.core.config import SupervisorConfig
from horizond.worker.leanbatch import MOVE_IF_PRESENT
from horizond.worker.rqworker import WorkerOwner, parse_worker_name

log = logging.getLogger("horizond.recovery")

WORKER_KEY_PREFIX = "rq:worker:"


HARD_TIMEOUT = "hard timeout"  # how guard.py names the kill of a job past its timeout and grace


def settle_lost_job(connection: Redis, job_id: str, worker_name: str, sup: SupervisorConfig, cause: str) -> str:
    """Retry or fail a job whose worker died running it. Returns what was done.

    Only a job still marked started by that very worker is touched: if the worker
    finished it before dying, the job's record says so and is left alone.
    """
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return "gone"
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        # Died after taking the job but before starting it: it never ran, so it
        # goes back to the head of its queue (not an attempt).
        intermediate = f"rq:queue:{job.origin}:intermediate"
        back = connection.register_script(REQUEUE_STUCK)(keys=[intermediate, f"rq:queue:{job.origin}"], args=[job_id])
        return _logged(job, "requeued" if back else "not-held", cause)
    if status != JobStatus.STARTED or (job.worker_name and job.worker_name != worker_name):
        return "not-held"
    queue = Queue(job.origin, connection=connection)
    rule = policy.retry_rule(job.retries_left, job.retry_intervals, sup.tries, sup.backoff)
    if cause.startswith(HARD_TIMEOUT) and _fails_on_timeout(job):
        rule = None  # its @job_options(fail_on_timeout=True): a timeout is final, a hard one too
    reason = f"horizond: worker {worker_name} stopped while running this job: {cause}"
    executions = job.get_executions()
    with connection.pipeline() as pipe:
        for execution in executions:  # its record, the started registry entry and the worker's index entry
            execution.delete(job, pipeline=pipe)
        if rule is not None and rule.retries_left > 0:
            _retry_now(job, queue, rule, pipe)
            outcome = "retried"
        else:
            job.ended_at = utcnow()  # RQ's failure path leaves it unset; `failed` and `prune-failed` read it
            pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(reason, pipe, worker_name=worker_name)
            outcome = "failed"
        pipe.execute()
    if outcome == "failed":
        queue.enqueue_dependents(job)
    _release_slot(job)
    return _logged(job, outcome, cause)


def _fails_on_timeout(job: Job) -> bool:
    """The job's declared fail_on_timeout, as its worker noted it in the job's meta at the start
    (worker/jobcontrol.py): the master never imports job code."""
    mine = job.meta.get(jobopts.META_KEY) if isinstance(job.meta, dict) else None
    options = mine.get("options") if isinstance(mine, dict) else None
    return isinstance(options, dict) and options.get("fail_on_timeout") is True


def _release_slot(job: Job) -> None:
    """Free the job's RQ 3 rate-limit slot (kept when it went back to its queue), as RQ's worker
    does once the outcome is committed; a failure here leaves the slot to RQ's maintenance."""
    try:
        release_slot(job)
    except RedisError as exc:
        log.warning("rate-limit slot not released; RQ's maintenance frees it", extra={
            "event": "rate_limit_release_failed", "job_id": job.id, "error": str(exc)})


def _retry_now(job: Job, queue: Queue, rule: policy.RetryRule, pipe) -> None:
    """RQ's Job.retry, except that a job cut short goes to the head of its queue:
    it already had its turn, and a long backlog must not delay it further."""
    interval = policy.retry_interval(rule)
    job.retries_left = rule.retries_left - 1
    job.retry_intervals = list(rule.intervals)
    if interval:
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
        queue.schedule_job(job, utcnow() + timedelta(seconds=interval), pipeline=pipe)
    else:
        queue._enqueue_job(job, pipeline=pipe, at_front=True)


def _logged(job: Job, outcome: str, cause: str) -> str:
    log.warning("job of a dead worker settled", extra={"event": "job_recovered", "job_id": job.id,
                                                       "queue": job.origin, "outcome": outcome, "cause": cause})
    return outcome


def forget_worker(connection: Redis, worker_name: str, queues: tuple[str, ...]) -> None:
    """Remove a dead worker from RQ's registries so `rq info` shows only live ones."""
    key = WORKER_KEY_PREFIX + worker_name
    with connection.pipeline() as pipe:
        pipe.srem(REDIS_WORKER_KEYS, key)
        for name in queues:
            pipe.srem(WORKERS_BY_QUEUE_KEY % name, key)
        pipe.delete(key, WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name))  # RQ 3: its execution index
        pipe.execute()


def horizond_alive(pid: int, start: str | None) -> bool:
    """Is the master that started at `start` (sysutil.start_token) with this pid still running?

    The pid alone is not enough: after a crash it may belong to anything, a
    `journalctl -u horizond` as well as a new horizond. A worker name without a
    start (written before start tokens) falls back to "horizond" in the command line.
    """
    if start is not None:
        return sysutil.start_token(pid) == start
    try:
        return any("horizond" in part for part in psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def orphans_at_startup(connection: Redis, queues: tuple[str, ...], hostname: str,
                       master_alive=horizond_alive) -> list[tuple[str, str]]:
    """(job_id, worker_name) of started jobs whose horizond worker on this host died with its master.

    Workers die with their master (PDEATHSIG), so a started job held by a worker
    of a dead master on this host can only be a job that master's crash stopped.
    """
    found = []
    for name in queues:
        ids = StartedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
        for job in Job.fetch_many(ids, connection=connection) if ids else []:
            owner = parse_worker_name(job.worker_name or "") if job else None
            if owner and owner.host == hostname and not master_alive(owner.master_pid, owner.master_start):
                found.append((job.id, job.worker_name))
    return found


def stale_workers(connection: Redis, hostname: str, master_alive=horizond_alive) -> list[str]:
    """RQ worker records of this host's horizond workers whose master is dead."""
    names = []
    for key in connection.smembers(REDIS_WORKER_KEYS):
        name = key.decode().removeprefix(WORKER_KEY_PREFIX)
        owner = parse_worker_name(name)
        if owner and owner.host == hostname and not master_alive(owner.master_pid, owner.master_start):
            names.append(name)
    return names


REQUEUE_STUCK = MOVE_IF_PRESENT  # keys: the intermediate list, then the queue


class IntermediateSweep:
    """Jobs a worker moved out of their queue but never started (it died in between).

    Such a job is still "queued" and sits in `<queue>:intermediate`; a live worker
    starts a job within milliseconds of moving it, so an id seen there twice,
    STUCK_AFTER seconds apart, and held by none of our workers, goes back to the
    head of its queue. (RQ itself waits a minute, and then fails the job.)
    """

    STUCK_AFTER = 10.0

    def __init__(self):
        self.first_seen: dict[tuple[str, str], float] = {}

    def run(self, connection: Redis, queues: tuple[str, ...], now: float, holding: set[str]) -> list[str]:
        with connection.pipeline(transaction=False) as pipe:
            for name in queues:
                pipe.lrange(f"rq:queue:{name}:intermediate", 0, -1)
            listed = pipe.execute()
        candidates = [(q, i.decode()) for q, ids in zip(queues, listed, strict=True) for i in ids
                      if i.decode() not in holding]
        if not candidates:
            self.first_seen = {}
            return []
        with connection.pipeline(transaction=False) as pipe:
            for _, job_id in candidates:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses = pipe.execute()
        requeue = connection.register_script(REQUEUE_STUCK)
        seen, recovered = {}, []
        for (queue, job_id), status in zip(candidates, statuses, strict=True):
            stuck_list = f"rq:queue:{queue}:intermediate"
            if status is None:  # the job was deleted: drop the dangling id
                connection.lrem(stuck_list, 1, job_id)
            elif status == b"queued":
                first = self.first_seen.get((queue, job_id), now)
                if now - first >= self.STUCK_AFTER and requeue(keys=[stuck_list, f"rq:queue:{queue}"],
                                                               args=[job_id], client=connection):
                    recovered.append(job_id)
                    log.warning("job stuck between queue and worker put back", extra={
                        "event": "job_recovered", "job_id": job_id, "queue": queue, "outcome": "requeued"})
                else:
                    seen[(queue, job_id)] = first
        self.first_seen = seen
        return recovered


def settle_dead_node(connection: Redis, ident: dict, cause: str) -> list[str]:
    """The fleet leader's settling of a dead node (fleet/leader.py): every started job held by a
    worker of that node's master (host, pid and start in the worker's name) is retried or failed
    under the retry policy that node reported; its worker records are forgotten. Returns the job ids
    settled (retried or failed). Idempotent: a job already settled is no longer held by that worker."""
    host, pid, start = ident.get("host"), ident.get("pid"), ident.get("start")
    policies = ident.get("policy") if isinstance(ident.get("policy"), dict) else {}

    def of_node(name: str) -> WorkerOwner | None:
        owner = parse_worker_name(name or "")
        return owner if owner and (owner.host, owner.master_pid, owner.master_start) == (host, pid, start) else None

    from horizond.supervise.scaling import existing_queues  # scaling imports the supervisor: not at load

    queues = existing_queues(connection)
    settled = []
    for name in queues:
        ids = StartedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
        for job in Job.fetch_many(ids, connection=connection) if ids else []:
            owner = of_node(job.worker_name) if job else None
            if owner is None:
                continue
            tries, backoff = _policy(policies.get(owner.supervisor))
            sup = SupervisorConfig(name=owner.supervisor, tries=tries, backoff=backoff)
            if settle_lost_job(connection, job.id, job.worker_name, sup, cause) in ("retried", "failed"):
                settled.append(job.id)
    for key in connection.smembers(REDIS_WORKER_KEYS):
        worker = key.decode().removeprefix(WORKER_KEY_PREFIX)
        if of_node(worker):
            forget_worker(connection, worker, tuple(queues))
    return settled


def _policy(raw) -> tuple[int, tuple[int, ...]]:
    """A dead node's (tries, backoff) as it reported them; anything unreadable: one try."""
    try:
        tries, backoff = raw
        return max(1, int(tries)), tuple(max(0, int(b)) for b in backoff) or (0,)
    except (TypeError, ValueError):
        return 1, (0,)
