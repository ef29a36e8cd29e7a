"""Snapshots: one JSON row per queue per [metrics] snapshot_interval, kept in Redis for `horizonctl trends`."""

from __future__ import annotations

import json
import logging
import time

from redis import Redis

log = logging.getLogger("horizond.observe")


def snapshot_key(prefix: str, queue: str) -> str:
    return f"{prefix}:snapshots:{queue}"


class SnapshotWriter:
    def write(self, redis: Redis, prefix: str, interval: int, keep_hours: int, rows: list[dict]) -> None:
        """One entry per queue per interval, newest first; bounded by count and by TTL,
        so Redis memory grows with time kept and queues, never with jobs."""
        keep = max(1, keep_hours * 3600 // interval)
        try:
            with redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    key = snapshot_key(prefix, row["queue"])
                    pipe.lpush(key, json.dumps(dict(row, time=time.time()), default=_finite))
                    pipe.ltrim(key, 0, keep - 1)
                    pipe.expire(key, keep_hours * 3600 + interval)
                pipe.execute()
        except Exception as exc:
            log.debug("snapshot skipped", extra={"event": "snapshot_failed", "error": str(exc)})


def _finite(value):
    return None if value == float("inf") else str(value)
