"""The lean worker: RQ's SimpleWorker with its per-job Redis bookkeeping batched.

Stock SimpleWorker (RQ 3) spends about 57 Redis commands in 12 round trips on a no-op
job: the worker heartbeat is written several times per job, the worker state three
times, the job hash is rewritten whole (data included) to change its status, and
the counters are incremented one by one. Every other RQ tool reads only the end
state of those writes, so this worker writes the same end state in fewer commands:

  dequeue      BLMOVE, HGETALL (RQ's own) when the worker was idle; in a stream of
               jobs, the previous job's end script takes the next job (see below)
  start        one script call: execution record and indexes, started registry
               (rq:wip), job status/started_at/worker_name, PERSIST, worker
               busy, intermediate-list LREM; refused while `rq suspend` is in
               force (the job goes back to the head of its queue)
  success      one script call: job status/ended_at, result stream, finished
               registry, job TTL (or, for result_ttl=0, the job's deletion),
               execution cleanup, worker idle + counters; applied only if the
               job is still ours and has no dependents
  failure      one script call, guarded the same way: RQ's failure writes (failed
               registry, failure result, job) or its retry (queue or scheduled
               registry), execution cleanup, worker counters
  next job     the end script also takes the next job, as the dequeue would, and
               then leaves the worker's idle write out (leannext.py)

The writes are built by RQ's own helpers and sent as guarded batches
(leanbatch.py). Whatever the lean paths do not cover takes RQ's own code: a
returned Retry, repeats, a job with dependents (RQ moves them to ready in the same
transaction), a job canceled, deleted or stopped while it ran, group members,
retries of rate-limited jobs, and job classes that override how a job ends. What
changes is *when* the worker's liveness fields are refreshed: the idle heartbeat
is written at most every HEARTBEAT_EVERY seconds (its TTL is minutes; the master
watches its workers over their channel anyway), and the blocking `rq suspend`
wait is entered at most every SUSPENSION_EVERY seconds (the start script refuses
jobs in between).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta

import redis
from rq.callbacks import execute_failure_callback, execute_success_callback
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.job_lifecycle import format_exc_info
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry, release_slot
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED, is_suspended
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import SimpleWorker, WorkerStatus
from rq.worker.base import StopRequested

from horizond.worker.leanbatch import Batches
from horizond.worker.leannext import TakesNextJob

HEARTBEAT_EVERY = 15.0  # worker key TTL is worker_ttl + 60 s (480 s by default)
SUSPENSION_EVERY = 1.0
# What a job class may override that the lean paths would bypass: such classes take RQ's paths.
JOB_HOOKS = ("_handle_success", "_handle_failure", "cleanup", "set_status", "save", "retry", "delete")


class LeanWorker(TakesNextJob, SimpleWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lean_heartbeat_at = float("-inf")  # monotonic time of the last idle-TTL liveness write
        self._lean_idle_ttl = False  # does the worker key carry the idle TTL (not a job's)?
        self._lean_suspension_at = float("-inf")  # ... and of the last `rq suspend` check
        self._lean_burst = False
        self._lean_batches = Batches(self.connection)
        self._lean_ok = _lean_possible(self.job_class, self.log)

    def work(self, burst: bool = False, *args, **kwargs) -> bool:
        self._lean_burst = burst
        return super().work(burst, *args, **kwargs)

    # --- liveness: written when it changes, or when it would grow stale ----------------

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """Skipped only while the key already has the idle TTL from a recent write: after any
        path that left a job's TTL on it (failure, retry, repeat ...) the next call writes."""
        idle = timeout is None
        if pipeline is None and idle and self._lean_idle_ttl and \
                time.monotonic() - self._lean_heartbeat_at < HEARTBEAT_EVERY:
            return
        super().heartbeat(timeout, pipeline)
        self._lean_idle_ttl = idle
        if idle:
            self._lean_heartbeat_at = time.monotonic()

    def set_state(self, state: str, pipeline=None):
        if pipeline is None and state == getattr(self, "_state", None):
            return
        super().set_state(state, pipeline)

    def check_for_suspension(self, burst: bool):
        if time.monotonic() - self._lean_suspension_at < SUSPENSION_EVERY:
            return
        self._lean_suspension_at = time.monotonic()
        if self._lean_next is not None and is_suspended(self.connection, self):
            self._lean_put_back()  # suspended: the held job waits in its queue, not with this worker
        super().check_for_suspension(burst)

    def increment_successful_job_count(self, pipeline=None):
        # Absolute values: this worker is the only writer of its own hash, and a value
        # rides along in the HSET the success path sends anyway (RQ: HINCRBY each).
        self.successful_job_count += 1
        (pipeline if pipeline is not None else self.connection).hset(
            self.key, "successful_job_count", self.successful_job_count)

    def increment_failed_job_count(self, pipeline=None):
        self.failed_job_count += 1  # as the successful count: the lean failure writes the absolute value
        (pipeline if pipeline is not None else self.connection).hset(
            self.key, "failed_job_count", self.failed_job_count)

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline):
        self.total_working_time += job_execution_time.total_seconds()
        pipeline.hset(self.key, "total_working_time", self.total_working_time)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """RQ's dequeue loop without its per-job heartbeats and state write."""
        self.set_state(WorkerStatus.IDLE)
        connection_wait_time = 1.0
        idle_since = now()
        idle_time_left = max_idle_time
        held = self._lean_take_held() if self._lean_next is not None else None
        while True:
            try:
                self.heartbeat()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                if timeout is not None and idle_time_left is not None:
                    timeout = min(timeout, idle_time_left)
                result = held or self.queue_class.dequeue_any(
                    self._ordered_queues, timeout, connection=self.connection, job_class=self.job_class,
                    serializer=self.serializer, death_penalty_class=self.death_penalty_class)
                if result is not None:
                    job, queue = result
                    self.reorder_queues(reference_queue=queue)
                    job.redis_server_version = self.get_redis_server_version()
                    if self.log_job_description:  # RQ's lines; the logger's own level check keeps them cheap
                        self.log.info("Worker %s: %s: %s (%s)", self.name, queue.name, job.description, job.id)
                    else:
                        self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
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
        """SimpleWorker's, with the execution record written in the start's one call."""
        self.lean_put_back = False
        self._lean_jobs += 1
        self.perform_job(job, queue, None)
        self.set_state(WorkerStatus.IDLE)

    def prepare_execution(self, job: Job) -> Execution | None:
        """Deferred: the execution record is written with the rest of the start."""
        return None

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """Every start-of-job write RQ makes in two transactions (prepare_execution and
        prepare_job_execution), in one guarded call; raises _Suspended if `rq suspend` holds."""
        ttl = self.get_heartbeat_ttl(job)
        stamp = now()
        pipe = self._lean_batches.recorder()
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
        pipe.hset(self.key, mapping={"state": WorkerStatus.BUSY, "last_heartbeat": utcformat(stamp),
                                     **(self._lean_counts() if self._lean_idle_unsaved else {})})
        pipe.expire(self.key, ttl)  # Execution.create sets the TTL of the worker's execution index
        pipe.hset(job.key, mapping=dict(_policy_fields(job), status=JobStatus.STARTED, started_at=utcformat(stamp),
                                        last_heartbeat=utcformat(stamp), worker_name=self.name))
        pipe.persist(job.key)
        intermediate = f"{Queue.redis_queue_namespace_prefix}{job.origin}:intermediate"
        pipe.lrem(intermediate, 1, job.id)
        keys = [WORKERS_SUSPENDED, intermediate, f"{Queue.redis_queue_namespace_prefix}{job.origin}"]
        if not self._lean_batches.start(keys, job.id, pipe):
            raise _Suspended
        self.execution = execution
        self._lean_idle_unsaved = False
        self._state, self._lean_idle_ttl, self.last_heartbeat = WorkerStatus.BUSY, False, stamp
        job.worker_name, job.last_heartbeat, job.started_at = self.name, stamp, stamp
        job._status = JobStatus.STARTED
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def _lean_start(self, job: Job) -> bool:
        """Start the job; False if `rq suspend` held: the job went back to the head of its queue
        and the worker waited, as RQ does, until `rq resume` (in burst mode: StopRequested)."""
        try:
            self.prepare_job_execution(job, remove_from_intermediate_queue=True)
            return True
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Redis went away with the start's reply unread: the start may or may not be written.
            # Not the job's failure (RQ's failure path would swallow a second Redis error and leave
            # the job "started" by a worker that goes on idle): the worker quits still busy, and
            # the master settles the job by what Redis says once it is back (recovery.py).
            raise StartUnknown(f"the start of job {job.id} may not be written: {exc}") from exc
        except _Suspended:
            self._lean_write_idle()  # the job is back in its queue: the worker shows idle, as RQ leaves it
            self._lean_suspension_at = float("-inf")
            self.check_for_suspension(self._lean_burst)
            return False

    def perform_job(self, job: Job, queue: Queue, execution: Execution | None = None) -> bool:
        """RQ's perform_job with the lean start and success; see the module's docstring
        for what takes RQ's own path."""
        execution = None
        try:
            while not self._lean_start(job):
                if not self._lean_batches.retake(job.id, job.origin):  # another worker has it now
                    self.lean_put_back = True  # never started here
                    return False
            execution = self.execution
            with self.death_penalty_class(job.timeout or self.queue_class.DEFAULT_TIMEOUT, JobTimeoutException,
                                          job_id=job.id):
                return_value = job.perform()
            if isinstance(return_value, Retry) or job.repeats_left or not self._lean_ok or job.group_id:
                self._finalize_success(job, queue, execution, return_value)
                return True
            job.ended_at = now()
            job._result = return_value
            job._status = JobStatus.FINISHED
            execute_success_callback(job, self.death_penalty_class, return_value)
        except StartUnknown:
            raise  # RQ's work loop quits on it; see _lean_start
        except StopRequested:
            if execution is None:  # `rq suspend` in burst mode before the start: the job is back in its queue
                self.lean_put_back = True
                raise
            self._lean_fail(job, queue, execution, sys.exc_info())  # raised by the job itself
            return False
        except:  # noqa: E722 - as RQ's perform_job: whatever the job raised fails it, SystemExit included
            self._lean_fail(job, queue, execution, sys.exc_info())
            return False
        lean = self._lean_success(job, queue, execution)
        if not lean:  # canceled, deleted or given dependents while it ran: RQ's own path, as RQ would
            job.heartbeat(job.ended_at, job.success_callback_timeout)
            self.handle_job_success(job=job, queue=queue, started_job_registry=queue.started_job_registry,
                                    execution=execution)
        job.send_webhooks(JobStatus.FINISHED)
        self._lean_log_success(job, completed=lean)
        return True

    def _lean_success(self, job: Job, queue: Queue, execution: Execution) -> bool:
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        ended = job.ended_at
        pipe = self._lean_batches.recorder()
        if result_ttl == 0:  # RQ's job.cleanup(0), without its reads: the job was ours, started, alone
            # Execution.delete, but the job's execution index and the execution go in the job's DEL
            job.started_job_registry.remove_execution(execution=execution, pipeline=pipe)
            if execution.worker_name:
                pipe.srem(execution.worker_executions_key, execution.composite_key)
            pipe.delete(job.key, job.dependents_key, job.dependencies_key, Result.get_key(job.id),
                        job.execution_registry.key, execution.key)
            if job.has_rate_limit:
                pipe.zrem(RateLimitRegistry.from_job(job).rate_limited_key, job.id)
        else:
            execution.delete(job=job, pipeline=pipe)
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED, "ended_at": utcformat(ended),
                                        "last_heartbeat": utcformat(ended)})
            Result.create(job, Result.Type.SUCCESSFUL, ttl=result_ttl, return_value=job._result,
                          worker_name=self.name, pipeline=pipe, execution_id=execution.id,
                          execution_started_at=execution.created_at, execution_ended_at=ended)
            job.finished_job_registry.add(job, result_ttl, pipe)
            if result_ttl > 0:
                pipe.expire(job.key, result_ttl)
                if job._dependency_ids:
                    pipe.expire(job.dependencies_key, result_ttl)
        counts = {"successful_job_count": self.successful_job_count + 1,
                  "total_working_time": self.total_working_time + (ended - job.started_at).total_seconds()}
        idle = self._lean_batches.recorder()
        idle.hset(self.key, mapping={"state": WorkerStatus.IDLE, "last_heartbeat": utcformat(ended), **counts})
        idle.expire(self.key, self.worker_ttl + 60)  # the execution index is empty now: Redis dropped it
        if not self._lean_end(job, pipe, idle):
            return False
        self._lean_ended(execution, ended)
        self.successful_job_count, self.total_working_time = counts.values()
        release_slot(job)
        return True

    def _lean_fail(self, job: Job, queue: Queue, execution: Execution, exc_info) -> None:
        """RQ's _finalize_failure, with the failure's writes in one guarded call where possible."""
        job._status = JobStatus.FAILED
        job.ended_at = now()
        if job.failure_callback is not None:  # it may take a while: RQ extends the job's heartbeat first
            job.heartbeat(job.ended_at, job.failure_callback_timeout)
        try:
            execute_failure_callback(job, self.death_penalty_class, *exc_info)
        except:  # noqa: E722 - as RQ: a failing callback replaces the job's exception
            exc_info = sys.exc_info()
        self.handle_exception(job, *exc_info)
        exc_string = format_exc_info(exc_info)
        if execution is None or not (self._lean_ok and self._lean_failure(job, queue, execution, exc_string)):
            self.handle_job_failure(job=job, exc_string=exc_string, queue=queue,
                                    started_job_registry=queue.started_job_registry, execution=execution)

    def _lean_failure(self, job: Job, queue: Queue, execution: Execution, exc_string: str) -> bool:
        """RQ's handle_job_failure, recorded and sent as one call guarded like the success.
        False (nothing written, the job as it was) where RQ's own path must run: a stopped job,
        a group member, a rate-limited job to retry, dependents, or a job no longer ours."""
        retry = job.should_retry
        if self._stopped_job_id == job.id or job.group_id or (retry and job.has_rate_limit):
            return False
        saved = dict(job.__dict__)
        ended = job.ended_at
        pipe = self._lean_batches.recorder()
        job.last_heartbeat = ended
        if retry:  # Job.retry, whose status write would not go through the pipeline
            interval = job.get_retry_interval()
            job.retries_left -= 1
            if interval:
                job._status = JobStatus.SCHEDULED
                queue.schedule_job(job, ended + timedelta(seconds=interval), pipeline=pipe)
            else:
                queue._enqueue_job(job, pipeline=pipe, at_front=job.enqueue_at_front_on_retry)
        else:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            if not self.disable_default_exception_handler:
                job._handle_failure(exc_string, pipe, worker_name=self.name, execution_id=execution.id,
                                    execution_started_at=execution.created_at, execution_ended_at=ended)
        execution.delete(job=job, pipeline=pipe)
        # the guard ensures the dependents set is empty (absent); a job without dependencies has no such set
        self._lean_batches.drop_expires(pipe, [job.dependents_key] + ([] if job._dependency_ids else
                                                                      [job.dependencies_key]))
        counts = {"failed_job_count": self.failed_job_count + 1,
                  "total_working_time": self.total_working_time + (ended - job.started_at).total_seconds()}
        idle = self._lean_batches.recorder()
        idle.hset(self.key, mapping={"state": WorkerStatus.IDLE, "last_heartbeat": utcformat(ended), **counts})
        idle.expire(self.key, self.worker_ttl + 60)
        if not self._lean_end(job, pipe, idle):
            job.__dict__.clear()
            job.__dict__.update(saved)
            return False
        self._lean_ended(execution, ended)
        self.failed_job_count, self.total_working_time = counts.values()
        if not retry:
            job.send_webhooks(JobStatus.FAILED, exc_string=exc_string)
        release_slot(job)
        return True

    def _lean_ended(self, execution: Execution, ended) -> None:
        """What the worker knows once a job's end is committed: idle, with the idle TTL."""
        self.executions.pop(execution.id, None)
        self._state, self._lean_idle_ttl, self.last_heartbeat = WorkerStatus.IDLE, True, ended
        self._lean_heartbeat_at = time.monotonic()

    def _lean_log_success(self, job: Job, completed: bool) -> None:
        """RQ's INFO lines for a finished job (handle_job_success logs "completed" on its path),
        made as RQ makes them: the logger checks its level and formats only what it emits."""
        took = job.ended_at - job.started_at
        if completed and self.log_job_description:
            self.log.info("Successfully completed %s job in %ss on worker %s", job.description, took, self.name)
        elif completed:
            self.log.info("Successfully completed job %s in %ss on worker %s", job.id, took, self.name)
        self.log.info("Worker %s: %s: %s (%s)", self.name, job.origin, "Job OK", job.id)
        if self.log_result_lifespan:
            ttl = job.get_result_ttl(self.default_result_ttl)
            if ttl > 0:
                self.log.info("Worker %s: job %s result is kept for %s seconds", self.name, job.id, ttl)
            elif ttl < 0:
                self.log.info("Worker %s: job %s result will never expire, clean up result key manually",
                              self.name, job.id)


class StartUnknown(Exception):  # noqa: N818 - the state, not an error of the job
    """Redis dropped the connection while a job's start was in flight (LeanWorker._lean_start)."""


class _Suspended(Exception):
    """`rq suspend` was in force when the job was about to start."""


def _lean_possible(job_class: type, log: logging.Logger) -> bool:
    """A job class that overrides how a job ends gets RQ's own paths, said once."""
    overridden = [name for name in JOB_HOOKS if getattr(job_class, name) is not getattr(Job, name)]
    if overridden:
        log.info("job class %s overrides %s: its jobs take RQ's own paths", job_class.__name__,
                 ", ".join(overridden))
    return not overridden


def _policy_fields(job: Job) -> dict:
    """Fields horizond's job policy set on the job in memory (timeout, retries), encoded
    as RQ encodes them; RQ's stock path persists them with its whole-job save."""
    if not getattr(job, "horizon_policy_applied", False):
        return {}
    meta = getattr(job, "horizon_meta_changed", False)  # per-job options noted (worker/jobcontrol.py)
    encoded = job.to_dict(include_meta=meta)
    return {k: encoded[k] for k in ("timeout", "retries_left", "retry_intervals", "meta") if k in encoded}
