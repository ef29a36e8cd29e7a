"""The master's view of whether Redis answers, and how soon to ask again.

Every loop step that talks to Redis runs through `step`: skipped while Redis is
known to be away, and a step that ran into a connection error or waited out its
socket timeout marks Redis away, so the steps after it in the same turn do not
each wait out their own timeout (a hung Redis once held the loop for 6 s per
turn). `probe` then decides when Redis is back: soon (0.25 s) after a refusal,
as during a restart; only every 2 s after a ping that hung, so a hung Redis
holds the loop at most one timeout (0.75 s) per 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from horizond.connection.redisconn import MASTER_TIMEOUT

PROBE_EVERY = 10.0
PROBE_HUNG = 2.0  # while away and a ping waits out its timeout
PROBE_REFUSED = 0.25  # while away and it refuses at once: cheap to ask often
STALL = MASTER_TIMEOUT - 0.1  # a step this slow waited out the master's Redis timeout


class RedisHealth:
    def __init__(self):
        self.error: str | None = None  # why Redis is considered away; None: it answers
        self._checked = -PROBE_EVERY
        self._again_after = PROBE_HUNG

    def due_in(self, now: float) -> float:
        """Seconds until the next probe."""
        return self._checked + (PROBE_EVERY if self.error is None else self._again_after) - now

    def probe(self, client: Redis, now: float) -> bool:
        """Ask Redis when due; True when it answers again after being away (wake its waiters)."""
        if self.due_in(now) > 0:
            return False
        self._checked = now
        asked = time.monotonic()
        was_away = self.error is not None
        try:
            client.ping()
            self.error = None
            return was_away
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self._again_after = PROBE_REFUSED if time.monotonic() - asked < 0.1 else PROBE_HUNG
            return False

    def failed(self, exc: Exception) -> None:
        """A step met a Redis error: Redis is away until a probe sees it back."""
        self.error = f"{type(exc).__name__}: {exc}"
        self._checked = time.monotonic()
        self._again_after = PROBE_HUNG if isinstance(exc, RedisTimeout) else PROBE_REFUSED

    def step(self, work: Callable[[], object]) -> None:
        """Run a step that talks to Redis, unless Redis is known to be away.

        Steps handle Redis errors their own way (keep targets, retry a settle later), so
        this judges by time too: a step that took its socket timeout met a hung Redis.
        """
        if self.error is not None:
            return
        started = time.monotonic()
        try:
            work()
        except (RedisConnectionError, RedisTimeout) as exc:
            self.failed(exc)
            return
        if (took := time.monotonic() - started) >= STALL:
            self.failed(TimeoutError(f"a Redis step took {took:.1f} s"))
