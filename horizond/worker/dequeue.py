"""How a worker takes its next job: the pause gate, then a dequeue that loses nothing.

RQ dequeues from one queue with BLMOVE into `<queue>:intermediate` (the job is
always in some list), but from several queues with plain BLPOP: a worker killed
between BLPOP's reply and the StartedJobRegistry write loses the job. Here every
dequeue is a move: one round trip (a Lua LMOVE over the queues in priority
order), then a short BLMOVE on the first queue so an idle worker still blocks
(growing from 50 ms after a job to 0.25 s when idle: see MULTI_QUEUE_BLOCK).
The master sweeps intermediate lists for what a dead worker left there.
"""

from __future__ import annotations

import os
import select
import time

from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.queue import Queue
from rq.worker.base import StopRequested

from horizond.worker.channel import StateWriter, decode

GATE_WAIT = 30.0  # a paused worker wakes this often so RQ keeps its heartbeat
HOLD_HERE = 3.0  # a queue an open breaker refused this worker: left alone this long (Gate.hold_here)
# An idle multi-queue worker blocks on its first queue and looks at the others between blocks.
# Right after a job it looks again soon (a stream of jobs often continues); each empty look
# doubles the block, up to MULTI_QUEUE_BLOCK: a job arriving on a lower queue waits at most that
# long for an idle worker, and a long-idle worker of N queues costs 4 x (N + 2) commands a second
# (the move script's EVALSHA and its N LMOVEs, then the BLMOVE). At 1 s, lower queues waited ten
# times longer than under RQ's BLPOP (docs/benchmarks.md) and a queue limit's promoted job
# (worker/limiting.py) sat up to 1 s before a free slot was used.
MULTI_QUEUE_BLOCK = 0.25
MULTI_QUEUE_FIRST_BLOCK = 0.05

# Move the first available job id, in priority order, into its queue's intermediate list.
_MOVE_FIRST = """
for i, key in ipairs(KEYS) do
    local id = redis.call('LMOVE', key, key .. ':intermediate', 'LEFT', 'RIGHT')
    if id then return {key, id} end
end
return false
"""


class Gate:
    """This worker's pause and stop state, set by the master over the channel.

    Read only when the worker is about to dequeue, so neither a pause nor a stop
    ever interrupts a job or a dequeue half-way; the master frees a worker blocked
    in BLMOVE with CLIENT UNBLOCK, which Redis resolves atomically (the job is
    either handed over or stays queued). RQ's own SIGTERM handler raises inside
    the blocking call instead, which can drop a job whose reply was in flight.
    """

    def __init__(self, fd: int, reporter: StateWriter, paused: bool, held: tuple[str, ...] = ()):
        self.fd = fd
        self.reporter = reporter
        self.paused = paused
        self.held = frozenset(held)  # queues the master holds (open circuit breakers)
        self.held_here: dict[str, float] = {}  # held by this worker after a breaker refused it a job: until
        self.stopping = False
        self._buffer = b""

    def _receive(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        if not data:  # the master is gone: take nothing more (PDEATHSIG is on its way)
            self.stopping = True
            return
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            word = (decode(line) or {}).get("cmd")
            if word == "pause":
                self.paused = True
            elif word == "continue":
                self.paused = False
            elif word == "stop":
                self.stopping = True
            elif word == "hold":  # the master's view of the breakers replaces what this worker guessed
                message = decode(line) or {}
                queues, seq = message.get("queues"), message.get("seq")
                self.held = frozenset(q for q in queues if isinstance(q, str)) if isinstance(queues, list) else \
                    frozenset()
                self.held_here.clear()
                if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 1 << 62:
                    self.reporter.send(held=seq)  # the master stops unblocking this worker

    def hold_here(self, queue: str) -> None:
        """Leave the queue alone for HOLD_HERE s: the master's word (at its next sample) holds it
        on every node while its breaker is open; a breaker that closed meanwhile (a probe done in
        between two samples) sends no word, so this worker looks again by itself."""
        self.held_here[queue] = time.monotonic() + HOLD_HERE

    def is_held(self, queue: str) -> bool:
        until = self.held_here.get(queue)
        if until is not None and time.monotonic() >= until:
            del self.held_here[queue]
            until = None
        return queue in self.held or until is not None

    def wait(self, timeout: float) -> None:
        """Sleep until the master says something (any word: Redis is back, stop) or `timeout` passes."""
        self._receive(timeout)

    def poll(self) -> None:
        """Take in what the master said, without waiting or raising."""
        self._receive(0)

    def check(self) -> None:
        """Raise StopRequested (at a safe point: no job in hand) when told to stop."""
        self._receive(0)
        if self.stopping:
            raise StopRequested()

    def is_paused(self) -> bool:
        self.check()
        return self.paused

    def hold(self, max_wait: float) -> bool:
        """Wait while paused (up to max_wait); True when the worker may dequeue."""
        if not self.is_paused():
            return True
        self.reporter.send(s="paused")
        deadline = time.monotonic() + max_wait
        while self.paused and not self.stopping and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        self.check()
        if self.paused:
            return False
        self.reporter.send(s="idle")
        return True


GATE: Gate | None = None  # one worker per process


def _open_keys(queues) -> list[str]:
    """The keys of the queues no circuit breaker holds now (all of them without a gate)."""
    if GATE is None:
        return [q.key for q in queues]
    GATE.poll()
    return [q.key for q in queues if not GATE.is_held(q.name)]


class HorizonQueue(Queue):
    @classmethod
    def dequeue_any(cls, queues, timeout, connection, job_class=None, serializer=None, death_penalty_class=None):
        keys = [q.key for q in queues]
        if GATE is not None and not GATE.hold(min(timeout or GATE_WAIT, GATE_WAIT)):
            raise DequeueTimeout(timeout, keys)
        holding = GATE is not None and bool(GATE.held or GATE.held_here)
        if len(queues) == 1 and not holding:  # RQ's own path is already a reliable BLMOVE
            return super().dequeue_any(queues, timeout, connection, job_class, serializer, death_penalty_class)
        options = {"job_class": job_class, "serializer": serializer, "death_penalty_class": death_penalty_class}
        deadline = None if timeout is None else time.monotonic() + timeout
        move_first = connection.register_script(_MOVE_FIRST)
        block = MULTI_QUEUE_FIRST_BLOCK
        while True:
            open_keys = _open_keys(queues)  # circuit breakers may hold some, and free them meanwhile
            moved = move_first(keys=open_keys, client=connection) if open_keys else None
            if not moved:
                left = None if deadline is None else deadline - time.monotonic()
                if left is None or left <= 0 or (GATE is not None and GATE.is_paused()):  # or stop
                    if timeout is None:  # RQ's "do not block" (burst mode)
                        return None
                    raise DequeueTimeout(timeout, keys)
                wait = min(block, left)
                job_id = connection.blmove(open_keys[0], open_keys[0] + ":intermediate", wait) if open_keys else \
                    GATE.wait(wait)
                if job_id is None:
                    block = min(block * 2, MULTI_QUEUE_BLOCK)
                    continue
                moved = [open_keys[0], job_id]
            result = cls._fetch_moved(moved, connection, options)
            if result is not None:
                return result

    @classmethod
    def _fetch_moved(cls, moved, connection, options):
        queue_key, job_id = (v.decode() if isinstance(v, bytes) else v for v in moved)
        queue = cls.from_queue_key(queue_key, connection=connection, job_class=options["job_class"],
                                   serializer=options["serializer"],
                                   death_penalty_class=options["death_penalty_class"])
        try:
            return queue.job_class.fetch(job_id, connection=connection, serializer=options["serializer"]), queue
        except NoSuchJobError:  # deleted while queued: drop the id, as RQ does
            connection.lrem(queue_key + ":intermediate", 1, job_id)
            return None
