"""Service-level measurements kept fleet-wide in Redis, one pipelined round trip per step.

Each finished job (master.py `_job_finished`) is counted in memory only, in its queue's current
slice (core/slo.py: counts and a latency histogram). Every step (the master's `metrics_save`
duty, every 2 s) sends, in ONE pipeline shared with the metrics' save: what this master counted
since the last step, added with HINCRBY to the slice's hash (so every master of a fleet adds
its own jobs to the same hashes); the queue's length at the start of a slice (HSETNX: the first
master to see the slice writes it); and the reads of the window's slices not yet final. A slice
is final once it ended FINAL_AFTER seconds ago (every master has saved into it by then): it is
read once and kept, so a step reads about two hashes per queue, not the whole window.

Key: `{prefix}:slo:{queue}:{window}:{slice start}` (a hash: n, f, o, x, p, b<bucket>), expiring
a slice after the window has passed it. A step that fails (Redis away) keeps its counts for
the next one. Memory: queues x slices x buckets, never jobs.
"""

from __future__ import annotations

import logging

from redis import Redis

from horizond.core import slo
from horizond.core.slo import Slice, SloTarget

log = logging.getLogger("horizond.slo")

FINAL_AFTER = 30.0  # seconds after a slice ends: every master's counts are in
EXPIRE_MARGIN = 600  # a slice outlives its window by this much, for a late reader


def counts(raw: dict) -> dict[str, int]:
    """A slice hash's counters; anything HINCRBY cannot have written (a name that is not UTF-8, a
    value that is not a 64-bit integer) is junk written by someone else, and left out: it must
    not take the master (or the dashboard) down, and must not fake a violation."""
    out = {}
    for name, value in raw.items():
        digits = value.removeprefix(b"-") if isinstance(value, bytes) else b""
        if not (digits.isdigit() and digits.isascii() and len(digits) <= 19):
            continue
        try:
            out[name.decode()] = max(-(2**63), min(2**63 - 1, int(value)))
        except (UnicodeDecodeError, AttributeError):
            continue
    return out


def slice_key(prefix: str, queue: str, window: int, start: int) -> str:
    return f"{prefix}:slo:{queue}:{window}:{start}"


class SloStore:
    def __init__(self):
        self._deltas: dict[tuple[str, int, int], dict[str, int]] = {}  # (queue, window, start) -> increments
        self._slices: dict[tuple[str, int], dict[int, Slice]] = {}  # (queue, window) -> start -> fleet-wide slice
        self._final: set[tuple[str, int, int]] = set()
        self._marked: set[tuple[str, int, int]] = set()  # slices whose starting queue length is written
        self._targets: dict[str, SloTarget | None] = {}
        self._slos: tuple[SloTarget, ...] | None = None
        self._warned = False

    def target(self, slos: tuple[SloTarget, ...], queue: str) -> SloTarget | None:
        """The queue's level, looked up once per queue per config (a reload brings a new tuple)."""
        if slos is not self._slos:
            self._slos, self._targets = slos, {}
        if queue not in self._targets:
            self._targets[queue] = slo.slo_for(slos, queue)
        return self._targets[queue]

    def record(self, slos: tuple[SloTarget, ...], queue: str, ok: bool, latency: float, now: float) -> None:
        """One finished job of this master, latency from enqueue to finish; no I/O."""
        target = self.target(slos, queue) if slos else None
        if target is None:
            return
        key = (queue, target.window, slo.slice_start(target.window, now))
        delta = self._deltas.setdefault(key, {})
        for name, count in slo.job_fields(target, ok, latency).items():
            delta[name] = delta.get(name, 0) + count
        self._final.discard(key)  # counted late into a slice already read: read it again

    def step(self, redis: Redis, prefix: str, slos: tuple[SloTarget, ...], queues: tuple[str, ...],
             pending: dict[str, int], now: float, pipe=None, before=None) -> None:
        """Write what was counted, mark new slices' queue lengths, read the open slices: one round
        trip, shared with `pipe` when given (its own commands, `before` to call with their replies,
        come first: the master saves its metrics in the same round trip)."""
        if not slos:
            self._deltas.clear()
            if pipe is not None and before is not None:
                before(pipe.execute(raise_on_error=False))
            return
        own = pipe is None
        pipe = redis.pipeline(transaction=False) if own else pipe
        try:
            head = len(pipe.command_stack)
            reads, marks = self._stage(pipe, prefix, slos, queues, pending, now)
            replies = pipe.execute(raise_on_error=False)  # junk under one key spoils only its own replies
        finally:
            if own:
                pipe.reset()
        if before is not None:
            before(replies[:head])
        self._take(replies[head:], reads, marks, now)

    def _stage(self, pipe, prefix: str, slos: tuple[SloTarget, ...], queues: tuple[str, ...],
               pending: dict[str, int], now: float) -> tuple[list, list]:
        served = [(q, t) for q in queues if (t := self.target(slos, q)) is not None]
        self._forget_old(slos, now)
        reads: list[tuple[str, int, int]] = []
        marks: list[tuple[str, int, int]] = []
        for (queue, window, start), fields in self._deltas.items():
            key = slice_key(prefix, queue, window, start)
            for name, count in fields.items():
                pipe.hincrby(key, name, count)
            pipe.expire(key, window + slo.slice_seconds(window) + EXPIRE_MARGIN)
        for queue, target in served:
            start = slo.slice_start(target.window, now)
            if (queue, target.window, start) not in self._marked and queue in pending:
                key = slice_key(prefix, queue, target.window, start)
                pipe.hsetnx(key, "p", int(pending[queue]))
                pipe.expire(key, target.window + target.slice_seconds + EXPIRE_MARGIN)
                marks.append((queue, target.window, start))
        for queue, target in served:  # the reads come last: their replies are the tail
            for start in slo.window_starts(target.window, now):
                if (queue, target.window, start) not in self._final:
                    pipe.hgetall(slice_key(prefix, queue, target.window, start))
                    reads.append((queue, target.window, start))
        return reads, marks

    def _take(self, replies: list, reads: list, marks: list, now: float) -> None:
        if not self._warned and any(isinstance(r, Exception) for r in replies):
            self._warned = True  # once: the step repeats every 2 s
            log.warning("service-level keys unreadable or unwritable; they count as empty", extra={
                "event": "slo_keys_refused", "error": str(next(r for r in replies if isinstance(r, Exception)))})
        self._deltas = {}
        self._marked.update(marks)
        for (queue, window, start), raw in zip(reads, replies[-len(reads):] if reads else [], strict=True):
            raw = raw if isinstance(raw, dict) else {}
            fields = counts(raw)
            self._slices.setdefault((queue, window), {})[start] = slo.from_fields(fields)
            if start + slo.slice_seconds(window) + FINAL_AFTER < now:
                self._final.add((queue, window, start))

    def _forget_old(self, slos: tuple[SloTarget, ...], now: float) -> None:
        """Slices the window has passed, and queues no level covers any more, are dropped."""
        for (queue, window), slices in list(self._slices.items()):
            target = self.target(slos, queue)
            if target is None or target.window != window:
                del self._slices[(queue, window)]
                continue
            first = slo.window_starts(window, now)[0]
            for start in [s for s in slices if s < first]:
                del slices[start]
        self._final = {k for k in self._final if (k[0], k[1]) in self._slices and k[2] in self._slices[(k[0], k[1])]}
        self._marked = {k for k in self._marked if k[2] >= now - k[1] - slo.slice_seconds(k[1])}
        for key in [k for k in self._deltas if k[2] < now - k[1] - slo.slice_seconds(k[1])]:
            del self._deltas[key]  # Redis was away longer than the window: these jobs no longer count

    def report(self, slos: tuple[SloTarget, ...], queues: tuple[str, ...], pending: dict[str, int],
               now: float) -> list[dict]:
        """Each served queue with a level: its measurements over the window, as last read (no I/O)."""
        rows = []
        for queue in queues:
            target = self.target(slos, queue) if slos else None
            if target is None:
                continue
            slices = dict(self._slices.get((queue, target.window), {}))
            for (q, window, start), fields in self._deltas.items():  # counted here, not yet written
                if q == queue and window == target.window:
                    slices[start] = slices.get(start, Slice()).add(slo.from_fields(fields))
            rows.append(dict(slo.evaluate(target, slices, now, pending.get(queue)), queue=queue))
        return rows
