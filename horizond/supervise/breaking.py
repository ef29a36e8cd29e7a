"""Circuit breakers in the master: each sample, read every breaker (one script call), hold the
queues of open ones on this node's workers, and announce an opening once fleet-wide.

The script (observe/breakers.py SAMPLE) also moves an open breaker past its cooldown to
half-open, so the breakers advance as long as any master samples: no leader is needed. Which
master announces an opening (the `breaker_open` log line and the [notify] command) is decided in
Redis too: the first to see it.
"""

from __future__ import annotations

import logging
import os
import time

from redis import Redis

from horizond.core import breakers
from horizond.core.config import Config
from horizond.observe import breakers as state
from horizond.observe.helpers import Helpers

log = logging.getLogger("horizond.master")


def paused_queues_key(prefix: str) -> str:
    """The queues an operator paused (`horizonctl queue pause`, the dashboard): every master holds them."""
    return f"{prefix}:paused-queues"


class BreakerWatch:
    def __init__(self):
        self.states: dict[str, dict] = {}
        self.paused: frozenset[str] = frozenset()  # queues paused by an operator, fleet-wide
        self.held: frozenset[str] = frozenset()  # queues this node's workers must leave alone
        self.seq = 0  # counts the changes of `held`: a worker acknowledges the one it took in
        self.changed_at = 0.0  # monotonic, the last change

    def step(self, redis: Redis, config: Config, queues: tuple[str, ...], helpers: Helpers) -> bool:
        """Sample; True when the held queues changed (the workers must be told)."""
        paused = redis.smembers(paused_queues_key(config.redis_prefix))
        self.paused = frozenset(q.decode(errors="replace") for q in paused)
        self.states = state.sample(redis, config.redis_prefix, config.breakers)
        for breaker in config.breakers:
            now = self.states[breaker.name]
            if now["announce"]:
                event = {"event": "breaker_open", "breaker": breaker.name, "queues": list(breaker.queues),
                         "cooldown": now["cooldown"], "forced": now["forced"], "host": os.uname().nodename,
                         "time": time.time()}
                log.warning("circuit breaker open: its queues are held on every node",
                            extra={k: v for k, v in event.items() if k != "time"})
                helpers.notify(event, config.notify_command, config.webhook_url)
        held = breakers.held_queues(config.breakers, self.states, queues) | (self.paused & set(queues))
        changed, self.held = held != self.held, held
        if changed:
            self.seq, self.changed_at = self.seq + 1, time.monotonic()
        return changed

    def rows(self, config: Config) -> list[dict]:
        """`horizonctl breakers`, status, /metrics: each breaker's last sampled state."""
        return [{"name": b.name, **{k: v for k, v in self.states.get(b.name, {"state": "unknown"}).items()
                                    if k not in ("announce",)},
                 "queues": list(b.queues), "threshold": b.failures, "window": b.window}
                for b in config.breakers]

    def pause_queue(self, redis: Redis, config: Config, queue: str, paused: bool) -> None:
        key = paused_queues_key(config.redis_prefix)
        redis.sadd(key, queue) if paused else redis.srem(key, queue)
        log.warning(f"queue {'paused' if paused else 'continued'} by an operator, on every node", extra={
            "event": "queue_paused" if paused else "queue_continued", "queue": queue})

    def force(self, redis: Redis, config: Config, name: str, action: str) -> None:
        breaker = next(b for b in config.breakers if b.name == name)
        state.force(redis, config.redis_prefix, breaker, action)
        log.warning(f"circuit breaker forced {action} by an operator", extra={
            "event": f"breaker_forced_{action}", "breaker": name})
