"""Keeps the master's job metrics in Redis, so counters survive a master restart.

The master is the only writer of its metrics, so the whole state is written as
one JSON value (a few kB: bounded by queues x functions, never by jobs) rather
than as per-job increments: that costs one command every few seconds instead of
one per job. The key names the host and the control socket, which tell two
daemons sharing a Redis apart and stay the same across restarts.

Saved counts are restored once, added to whatever was counted meanwhile (Redis
may be away at start-up), and nothing is saved before that restore, so a saved
state is never overwritten by a fresh, empty one. Up to SAVE_EVERY seconds of
counts are lost if the master is killed with SIGKILL; a clean stop or re-exec
saves first.
"""

from __future__ import annotations

import json
import logging
import os
import time

from redis import Redis
from redis.exceptions import ResponseError

from horizond.observe.metrics import Metrics

log = logging.getLogger("horizond.metrics")

SAVE_EVERY = 2.0
KEEP_SECONDS = 7 * 24 * 3600  # a daemon stopped for longer than a week starts its counters from zero


HOURLY_KEEP = 8 * 24 * 3600  # hourly totals: the dashboard's "failed in the past 7 days", and a day more


def metrics_key(prefix: str, socket_path: str, host: str | None = None) -> str:
    return f"{prefix}:metrics:{host or os.uname().nodename}:{socket_path}"


def hourly_key(prefix: str, epoch: float) -> str:
    """Jobs processed and failed in one UTC hour, summed over every master of the fleet."""
    return f"{prefix}:hourly:{time.strftime('%Y%m%d%H', time.gmtime(epoch))}"


class MetricStore:
    def __init__(self, key: str, prefix: str | None = None):
        self.key = key
        self.prefix = prefix  # set: each save also adds what was counted since to its hour's totals
        self._totals: tuple[int, int] | None = None  # processed, failed at the last save (or restore)
        self.restored = False
        self._saved_changes = 0  # nothing counted yet: nothing to save
        self._saved_at = -SAVE_EVERY
        self._warned = False

    def step(self, redis: Redis, metrics: Metrics, now: float | None = None) -> None:
        """Restore once, then save at most every SAVE_EVERY seconds when something changed."""
        now = time.monotonic() if now is None else now
        if not self.restored:
            self.restore(redis, metrics)
        elif now - self._saved_at >= SAVE_EVERY:
            self.save(redis, metrics, now)

    def save_due_at(self) -> float:
        """When a change may be saved next (monotonic): the master's loop wakes for it then."""
        return self._saved_at + SAVE_EVERY

    def restore(self, redis: Redis, metrics: Metrics) -> None:
        try:
            raw = redis.get(self.key)
        except ResponseError as exc:  # not a string (someone else's key): count from zero, overwrite it
            raw = None
            log.warning("saved metrics unreadable; counting from zero", extra={
                "event": "metrics_restore_failed", "key": self.key, "error": str(exc)})
        except Exception:
            return  # Redis away: try again on the next step
        self.restored = True
        if raw is None:
            self._totals = (0, 0)
            return
        try:
            metrics.merge(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("saved metrics unreadable; counting from zero", extra={
                "event": "metrics_restore_failed", "key": self.key, "error": str(exc)})
            return
        self._totals = _totals(metrics)
        log.info("metrics restored", extra={"event": "metrics_restored", "key": self.key,
                                            "processed": sum(t.processed for t in metrics.queues.values())})

    def save(self, redis: Redis, metrics: Metrics, now: float | None = None) -> None:
        try:
            with redis.pipeline(transaction=False) as pipe:
                done = self.stage(pipe, metrics, now)
                if done is None:
                    return
                done(pipe.execute())
        except Exception as exc:
            log.debug("metrics not saved", extra={"event": "metrics_save_failed", "error": str(exc)})

    def stage(self, pipe, metrics: Metrics, now: float | None = None):
        """Add the save to `pipe` (which may carry other writes: the master sends its service-level
        step in the same round trip); returns what to call with the replies of these commands
        (at the pipeline's head), or None when there is nothing to save."""
        if not self.restored or metrics.changes == self._saved_changes:
            return None
        changes = metrics.changes
        totals = _totals(metrics)
        processed, failed = (now_ - then for now_, then in zip(totals, self._totals or totals, strict=True))
        pipe.set(self.key, json.dumps(metrics.dump()), ex=KEEP_SECONDS)
        commands = 1
        if self.prefix and (processed > 0 or failed > 0):
            hour = hourly_key(self.prefix, time.time())
            pipe.hincrby(hour, "processed", max(0, processed))
            pipe.hincrby(hour, "failed", max(0, failed))
            pipe.expire(hour, HOURLY_KEEP)
            commands += 3

        def done(replies: list) -> None:
            errors = [r for r in replies[:commands] if isinstance(r, Exception)]
            if errors:  # a key of the wrong type: tried again a period on, not at every finished job
                self._saved_at = time.monotonic() if now is None else now
                if not self._warned:
                    self._warned = True
                    log.warning("metrics not saved", extra={"event": "metrics_save_failed", "error": str(errors[0])})
                return
            self._totals = totals
            self._saved_changes = changes
            self._saved_at = time.monotonic() if now is None else now
        return done


def _totals(metrics: Metrics) -> tuple[int, int]:
    return (sum(t.processed for t in metrics.queues.values()), sum(t.failed for t in metrics.queues.values()))
