"""The lean worker: RQ's SimpleWorker with its per-job Redis bookkeeping batched.

Stock SimpleWorker spends about 52 Redis commands in 12 round trips on a no-op
job: the worker heartbeat is written five times per job, the worker state three
times, the job hash is rewritten whole (data included) to change its status,
and the counters are incremented one by one. Every other RQ tool reads only the
end state of those writes, so this worker writes the same end state in fewer
commands:

  dequeue      BLMOVE, HGETALL                         (RQ's own, unchanged)
  start        one MULTI: execution record, started registry (rq:wip), job
               status/started_at/worker_name, PERSIST, worker busy +
               current_job, intermediate-list LREM
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
import traceback
from datetime import timedelta

import redis
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry, _job_stack
from rq.queue import Queue
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
            except redis.exceptions.ConnectionError as exc:
                self.log.error("Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                               self.name, exc, connection_wait_time)
                time.sleep(connection_wait_time)
                connection_wait_time = min(connection_wait_time * self.exponential_backoff_factor,
                                           self.max_connection_wait_time)

    # --- one job ----------------------------------------------------------------------

    def prepare_execution(self, job: Job) -> Execution:
        """Deferred: the execution record is written with the rest of the start (perform_job)."""
        self.execution = None
        return None

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Every start-of-job write RQ makes in three round trips, in one transaction."""
        ttl = self.get_heartbeat_ttl(job)
        stamp = now()
        with self.connection.pipeline() as pipe:
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self._state = WorkerStatus.BUSY
            self._lean_heartbeat_at = time.monotonic()
            pipe.hset(self.key, mapping={"state": WorkerStatus.BUSY, "current_job": job.id,
                                         "current_job_working_time": 0, "last_heartbeat": utcformat(stamp)})
            pipe.expire(self.key, ttl)
            job.worker_name, job.last_heartbeat, job.started_at = self.name, stamp, stamp
            job._status = JobStatus.STARTED
            pipe.hset(job.key, mapping=dict(_policy_fields(job), status=JobStatus.STARTED,
                                            started_at=utcformat(stamp), last_heartbeat=utcformat(stamp),
                                            worker_name=self.name))
            pipe.persist(job.key)  # RQ's job.perform() does this as its first step
            pipe.lrem(f"{Queue.redis_queue_namespace_prefix}{job.origin}:intermediate", 1, job.id)
            pipe.execute()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """RQ's perform_job with the lean start and success; failure, Retry results and
        repeats take RQ's own path."""
        try:
            self.prepare_job_execution(job, remove_from_intermediate_queue=True)
            with self.death_penalty_class(job.timeout or self.queue_class.DEFAULT_TIMEOUT, JobTimeoutException,
                                          job_id=job.id):
                _job_stack.push(job)
                try:
                    return_value = job._result = job._execute()
                finally:
                    _job_stack.pop()
            job.ended_at = now()
            if isinstance(return_value, Retry):
                job.heartbeat(job.ended_at, job.success_callback_timeout)
                self.handle_job_retry(job=job, queue=queue, retry=return_value,
                                      started_job_registry=queue.started_job_registry, execution=self.execution)
                return True
            job._status = JobStatus.FINISHED
            job.execute_success_callback(self.death_penalty_class, return_value)
            if job.repeats_left or job.get_result_ttl(self.default_result_ttl) == 0:
                self.handle_job_success(job=job, queue=queue, started_job_registry=queue.started_job_registry)
            else:
                self._lean_success(job, queue)
            job.send_webhooks(JobStatus.FINISHED)
            return True
        except:  # noqa: E722 - as RQ's perform_job: whatever the job raised fails it, SystemExit included
            return self._lean_failure(job, queue)

    def _lean_success(self, job: Job, queue: Queue) -> None:
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        ended = job.ended_at
        with self.connection.pipeline() as pipe:  # MULTI ... EXEC
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED, "ended_at": utcformat(ended),
                                        "last_heartbeat": utcformat(ended)})
            pipe.smembers(job.dependents_key)  # reply [1]; in the transaction, so a dependent added later
            # sees "finished" and enqueues itself, and one added earlier is in this reply
            Result.create(job, Result.Type.SUCCESSFUL, ttl=result_ttl, return_value=job._result,
                          worker_name=self.name, pipeline=pipe, execution_id=self.execution.id,
                          execution_started_at=self.execution.created_at, execution_ended_at=ended)
            job.finished_job_registry.add(job, result_ttl, pipe)
            if result_ttl > 0:
                pipe.expire(job.key, result_ttl)
                if job._dependency_ids:
                    pipe.expire(job.dependencies_key, result_ttl)
            self.execution.delete(job=job, pipeline=pipe)
            self.execution = None
            self._state = WorkerStatus.IDLE
            self._lean_heartbeat_at = time.monotonic()
            self.successful_job_count += 1
            self.total_working_time += (ended - job.started_at).total_seconds()
            pipe.hset(self.key, mapping={"state": WorkerStatus.IDLE, "last_heartbeat": utcformat(ended),
                                         "successful_job_count": self.successful_job_count,
                                         "total_working_time": self.total_working_time})
            pipe.hdel(self.key, "current_job")
            pipe.expire(self.key, self.worker_ttl + 60)
            dependents = pipe.execute()[1]
        if dependents:
            if result_ttl > 0:
                self.connection.expire(job.dependents_key, result_ttl)
            queue.enqueue_dependents(job)

    def _lean_failure(self, job: Job, queue: Queue) -> bool:
        job._status = JobStatus.FAILED
        self.handle_execution_ended(job, queue, job.failure_callback_timeout)
        exc_info = sys.exc_info()
        exc_string = "".join(traceback.format_exception(*exc_info))
        try:
            job.execute_failure_callback(self.death_penalty_class, *exc_info)
        except Exception:  # noqa: BLE001 - as RQ: the callback's error replaces the job's
            exc_info = sys.exc_info()
            exc_string = "".join(traceback.format_exception(*exc_info))
        self.handle_exception(job, *exc_info)
        self.handle_job_failure(job=job, exc_string=exc_string, queue=queue,
                                started_job_registry=queue.started_job_registry)
        return False



def _policy_fields(job: Job) -> dict:
    """Fields horizond's job policy set on the job in memory (timeout, retries), encoded
    as RQ encodes them; RQ's stock path persists them with its whole-job save."""
    if not getattr(job, "horizon_policy_applied", False):
        return {}
    encoded = job.to_dict(include_meta=False)
    return {k: encoded[k] for k in ("timeout", "retries_left", "retry_intervals") if k in encoded}
