"""The lean worker's next job, taken by the previous job's end script (one round trip less a job).

When the worker will dequeue again, the end script of a job (success or failure, leanbatch.py)
also takes the next job as the dequeue would: LMOVE into `<queue>:intermediate`, in the order the
next dequeue would look at the queues, and HGETALL. If it got one, the worker's idle write is left
out of that script: the worker stays busy and its counters go with the next start. A stream of
jobs thus costs two round trips a job (end + next, start) where RQ's loop costs four (dequeue,
fetch, start, end). When the queues are empty the end is written whole before the worker blocks,
so no job's finish waits for the next job.

The taken job is "held" until the work loop dequeues. It goes back to the head of its queue, with
the worker's idle write, whenever it will not start at once: a stop or pause from the master, a
SIGTERM, `rq suspend`, max_jobs, the worker's exit. A worker killed meanwhile leaves it in the
intermediate list, still "queued", as after a BLMOVE: the master's IntermediateSweep (or the
settling of the dead worker) puts it back. Only inside work(): a perform_job called on its own
(RQ's tests do) takes nothing.
"""

from __future__ import annotations

from rq.job import Job
from rq.queue import Queue
from rq.utils import utcformat
from rq.worker import WorkerStatus

from horizond.worker import dequeue


class TakesNextJob:
    """Mixed in front of RQ's SimpleWorker by LeanWorker, whose end scripts call _lean_end."""

    _lean_next: tuple[Job, Queue] | None = None  # taken with the last job's end, not started
    _lean_working = False  # inside work(): the loop will dequeue again
    _lean_max_jobs: int | None = None
    _lean_jobs = 0
    _lean_idle_unsaved = False  # a job's end left out the worker's idle write (_lean_end)

    def work(self, burst: bool = False, *args, **kwargs) -> bool:
        self._lean_max_jobs = kwargs.get("max_jobs")
        self._lean_working = True
        try:
            return super().work(burst, *args, **kwargs)
        finally:
            self._lean_working = False

    def teardown(self):
        self._lean_put_back()  # before the worker deregisters: nothing it took stays out of its queue
        super().teardown()

    def _lean_end(self, job: Job, pipe, idle) -> bool:
        """Send a job's end (guarded); when the worker will dequeue again, the same call takes
        the next job, as the dequeue would: one round trip instead of two. The worker's idle
        write (`idle`) is then left out: it stays busy and its counts go with the next start;
        whatever keeps that job from starting writes them (_lean_write_idle)."""
        reply = self._lean_batches.success([job.key, job.dependents_key], pipe, idle, self._lean_next_from(),
                                           self.job_class.redis_job_namespace_prefix)
        if isinstance(reply, list):
            self._lean_idle_unsaved = True
            self._lean_hold(*reply)
            return True
        return bool(reply)

    def _lean_counts(self) -> dict:
        return {"successful_job_count": self.successful_job_count, "failed_job_count": self.failed_job_count,
                "total_working_time": self.total_working_time}

    def _lean_write_idle(self, pipeline=None) -> None:
        """The idle write a job's end left out (see _lean_end), if it did."""
        if not self._lean_idle_unsaved:
            return
        pipe = pipeline if pipeline is not None else self.connection.pipeline(transaction=False)
        pipe.hset(self.key, mapping={"state": WorkerStatus.IDLE, "last_heartbeat": utcformat(self.last_heartbeat),
                                     **self._lean_counts()})
        pipe.expire(self.key, self.worker_ttl + 60)
        if pipeline is None:
            pipe.execute()
        self._lean_idle_unsaved = False

    def _lean_next_from(self) -> list[str]:
        """The queues the next dequeue would look at, in its order; none if it will not dequeue.
        The master's words first: a busy worker reads them only between jobs, and a pause or a
        hold sent during this job would otherwise be read only after the next job was taken
        (a job of a queue paused fleet-wide ran: tests/test_breakers.py)."""
        gate = dequeue.GATE
        if gate is not None:
            gate.poll()
        if not self._lean_working or self._stop_requested or (gate is not None and (gate.paused or gate.stopping)) \
                or (self._lean_max_jobs is not None and self._lean_jobs + 1 >= self._lean_max_jobs):
            return []
        return [q.key for q in self._ordered_queues if gate is None or not gate.is_held(q.name)]

    def _lean_hold(self, queue_key: bytes, job_id: bytes, data: list) -> None:
        """The next job, taken with the last one's end: held until the work loop dequeues."""
        queue_key, job_id = queue_key.decode(), job_id.decode()
        queue = next(q for q in self._ordered_queues if q.key == queue_key)
        try:
            job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
            job.restore(dict(zip(data[::2], data[1::2], strict=True)))
        except Exception:  # noqa: BLE001 - back to its queue: the dequeue fetches it again and fails RQ's way
            self._lean_next = (self.job_class(job_id, connection=self.connection), queue)
            self._lean_put_back()
            return
        self._lean_next = (job, queue)

    def _lean_put_back(self) -> None:
        """A held job goes back to the head of its queue: the worker stops, pauses or is suspended."""
        if self._lean_next is not None:
            job, queue = self._lean_next
            self._lean_next = None
            pipe = self.connection.pipeline(transaction=False)
            self._lean_batches.put_back(job.id, queue.key, pipe)
            self._lean_write_idle(pipe)
            pipe.execute()
        if dequeue.GATE is not None:
            dequeue.GATE.reporter.flush()  # the last job's end report waited for this job's start

    def _lean_take_held(self):
        """The held job, unless a pause or stop arrived meanwhile (then it goes back)."""
        gate = dequeue.GATE
        if gate is not None:
            gate.poll()
        if self._stop_requested or (gate is not None and (gate.paused or gate.stopping or (
                self._lean_next is not None and gate.is_held(self._lean_next[1].name)))):
            self._lean_put_back()  # a pause, stop or hold of its queue arrived since it was taken
            return None
        held, self._lean_next = self._lean_next, None
        return held
