"""The lean worker: RQ's SimpleWorker with its per-job Redis bookkeeping batched.

Stock SimpleWorker spends about 52 Redis commands in 12 round trips on a no-op
job: the worker heartbeat is written five times per job, the worker state three
times, the job hash is rewritten whole (data included) to change its status,
and the counters are incremented one by one. Every other RQ tool reads only the
end state of those writes, so this worker writes the same end state in fewer
commands:

  dequeue      BLMOVE, HGETALL                         (RQ's own, unchanged)
  start        one MULTI: execution record and indexes, started registry
               (rq:wip), job status/started_at/worker_name, PERSIST, worker
               busy + heartbeat, intermediate-list LREM (RQ 3: two round trips,
               prepare_execution and prepare_job_execution)
  success      one MULTI: job status/ended_at, result stream, finished
               registry, job TTL, execution cleanup, worker idle + counters,
               and the job's dependents read in the same transaction

Nothing RQ promises is skipped: job status, started/finished/failed
registries, executions, results when result_ttl != 0, retries (RQ's failure
path runs unchanged), success/failure callbacks, webhooks, dependents, repeats
(RQ's success path) and worker registration. What changes is *when* the worker
liveness fields are refreshed: the heartbeat is written at most every
HEARTBEAT_EVERY seconds (its TTL is minutes; the master watches its workers
over their channel anyway), and `rq suspend` is looked at every
SUSPENSION_EVERY seconds instead of before every job.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta

import redis
from rq.callbacks import execute_success_callback
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.results import Result
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import SimpleWorker, WorkerStatus

HEARTBEAT_EVERY = 15.0  # worker key TTL is worker_ttl + 60 s (480 s by default)
SUSPENSION_EVERY = 1.0


class LeanWorker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lean_heartbeat_at = float("-inf")  # monotonic time of the last liveness write
        self._lean_suspension_at = float("-inf")  # ... and of the last `rq suspend` check

    # --- liveness: written when it changes, or when it would grow stale ----------------

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        if pipeline is None and timeout is None and time.monotonic() - self._lean_heartbeat_at < HEARTBEAT_EVERY:
            return
        self._lean_heartbeat_at = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline=None):
        if pipeline is None and state == getattr(self, "_state", None):
            return
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool):
        if time.monotonic() - self._lean_suspension_at < SUSPENSION_EVERY:
            return
        self._lean_suspension_at = time.monotonic()
        super().check_for_suspension(burst)

    def increment_successful_job_count(self, pipeline=None):
        # Absolute values: this worker is the only writer of its own hash, and a value
        # rides along in the HSET the success path sends anyway (RQ: HINCRBY each).
        self.successful_job_count += 1
        (pipeline if pipeline is not None else self.connection).hset(
            self.key, "successful_job_count", self.successful_job_count)

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline):
        self.total_working_time += job_execution_time.total_seconds()
        pipeline.hset(self.key, "total_working_time", self.total_working_time)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """RQ's dequeue loop without its per-job heartbeats, state write and INFO log line."""
        self.set_state(WorkerStatus.IDLE)
        connection_wait_time = 1.0
        idle_since = now()
        idle_time_left = max_idle_time
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                if timeout is not None and idle_time_left is not None:
                    timeout = min(timeout, idle_time_left)
                result = self.queue_class.dequeue_any(
                    self._ordered_queues, timeout, connection=self.connection, job_class=self.job_class,
                    serializer=self.serializer, death_penalty_class=self.death_penalty_class)
                if result is not None:
                    job, queue = result
                    self.reorder_queues(reference_queue=queue)
                    job.redis_server_version = self.get_redis_server_version()
                    self.log.debug("Worker %s: %s: %s", self.name, queue.name, job.id)
                return result
            except DequeueTimeout:
                if max_idle_time is not None:
                    idle_time_left = math.ceil(max_idle_time - (now() - idle_since).total_seconds())
                    if idle_time_left <= 0:
                        return None
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.log.error("Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                               self.name, exc, connection_wait_time)
                time.sleep(connection_wait_time)
                connection_wait_time = min(connection_wait_time * self.exponential_backoff_factor,
                                           self.max_connection_wait_time)

    # --- one job ----------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue):
        """SimpleWorker's, with the execution record written in the start transaction."""
        self.perform_job(job, queue, None)
        self.set_state(WorkerStatus.IDLE)

    def prepare_execution(self, job: Job) -> Execution | None:
        """Deferred: the execution record is written with the rest of the start."""
        return None

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Every start-of-job write RQ makes in two transactions (prepare_execution and
        prepare_job_execution), in one."""
        ttl = self.get_heartbeat_ttl(job)
        stamp = now()
        with self.connection.pipeline() as pipe:
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self._state = WorkerStatus.BUSY
            self._lean_heartbeat_at = time.monotonic()
            self.last_heartbeat = stamp
            pipe.hset(self.key, mapping={"state": WorkerStatus.BUSY, "last_heartbeat": utcformat(stamp)})
            pipe.expire(self.key, ttl)  # Execution.create sets the TTL of the worker's execution index
            job.worker_name, job.last_heartbeat, job.started_at = self.name, stamp, stamp
            job._status = JobStatus.STARTED
            pipe.hset(job.key, mapping=dict(_policy_fields(job), status=JobStatus.STARTED,
                                            started_at=utcformat(stamp), last_heartbeat=utcformat(stamp),
                                            worker_name=self.name))
            pipe.persist(job.key)
            pipe.lrem(f"{Queue.redis_queue_namespace_prefix}{job.origin}:intermediate", 1, job.id)
            pipe.execute()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def perform_job(self, job: Job, queue: Queue, execution: Execution | None = None) -> bool:
        """RQ's perform_job with the lean start and success; failure, Retry results,
        repeats, result_ttl=0 and jobs with dependents take RQ's own path."""
        try:
            self.prepare_job_execution(job, remove_from_intermediate_queue=True)
            execution = self.execution
            with self.death_penalty_class(job.timeout or self.queue_class.DEFAULT_TIMEOUT, JobTimeoutException,
                                          job_id=job.id):
                return_value = job.perform()
            if isinstance(return_value, Retry) or job.repeats_left or \
                    job.get_result_ttl(self.default_result_ttl) == 0:
                self._finalize_success(job, queue, execution, return_value)
                return True
            job.ended_at = now()
            job._result = return_value
            job._status = JobStatus.FINISHED
            execute_success_callback(job, self.death_penalty_class, return_value)
            self._lean_success(job, queue, execution)
            job.send_webhooks(JobStatus.FINISHED)
        except:  # noqa: E722 - as RQ's perform_job: whatever the job raised fails it, SystemExit included
            self._finalize_failure(job, queue, self.execution, sys.exc_info())
            return False
        return True

    def _lean_success(self, job: Job, queue: Queue, execution: Execution) -> None:
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        ended = job.ended_at
        with self.connection.pipeline() as pipe:  # MULTI ... EXEC
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED, "ended_at": utcformat(ended),
                                        "last_heartbeat": utcformat(ended)})
            pipe.smembers(job.dependents_key)  # reply [1]; in the transaction, so a dependent added later
            # sees "finished" and enqueues itself, and one added earlier is in this reply
            Result.create(job, Result.Type.SUCCESSFUL, ttl=result_ttl, return_value=job._result,
                          worker_name=self.name, pipeline=pipe, execution_id=execution.id,
                          execution_started_at=execution.created_at, execution_ended_at=ended)
            job.finished_job_registry.add(job, result_ttl, pipe)
            if result_ttl > 0:
                pipe.expire(job.key, result_ttl)
                if job._dependency_ids:
                    pipe.expire(job.dependencies_key, result_ttl)
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            self._state = WorkerStatus.IDLE
            self._lean_heartbeat_at = time.monotonic()
            self.last_heartbeat = ended
            self.successful_job_count += 1
            self.total_working_time += (ended - job.started_at).total_seconds()
            pipe.hset(self.key, mapping={"state": WorkerStatus.IDLE, "last_heartbeat": utcformat(ended),
                                         "successful_job_count": self.successful_job_count,
                                         "total_working_time": self.total_working_time})
            pipe.expire(self.key, self.worker_ttl + 60)  # the execution index is empty now: Redis dropped it
            dependents = pipe.execute()[1]
        if dependents:
            if result_ttl > 0:
                self.connection.expire(job.dependents_key, result_ttl)
            queue.enqueue_dependents(job)
        release_slot(job)


def _policy_fields(job: Job) -> dict:
    """Fields horizond's job policy set on the job in memory (timeout, retries), encoded
    as RQ encodes them; RQ's stock path persists them with its whole-job save."""
    if not getattr(job, "horizon_policy_applied", False):
        return {}
    encoded = job.to_dict(include_meta=False)
    return {k: encoded[k] for k in ("timeout", "retries_left", "retry_intervals") if k in encoded}
