"""One way to reach Redis for the master, its workers and the scheduler.

A plain URL (redis://, rediss://, unix://) or Redis Sentinel: with sentinels the
client asks them for the current master on every (re)connect, so a failover is
followed without a restart; RQ's workers simply reconnect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from horizond import sysutil
from horizond.core.config import Config, redact_url


@dataclass(frozen=True)
class RedisSpec:
    url: str
    options: tuple = field(default=(), repr=False)  # password, TLS files
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, config: Config) -> RedisSpec:
        sentinels = tuple((h, int(p)) for h, _, p in (s.rpartition(":") for s in config.redis_sentinels))
        return cls(config.redis_url, tuple(sorted(config.redis_options().items())), sentinels,
                   config.redis_master_name, config.sentinel_password)

    def client(self, **extra) -> Redis:
        options = {**dict(self.options), **extra}
        if not self.sentinels:
            return Redis.from_url(self.url, **options)
        timeouts = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
        sentinel_kwargs = dict(timeouts, **({"password": self.sentinel_password} if self.sentinel_password else {}))
        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=sentinel_kwargs, **timeouts)
        if any(k.startswith("ssl_") for k in options) or self.url.startswith("rediss://"):
            options["ssl"] = True  # a URL says it by its scheme; Sentinel connections need the flag
        return sentinel.master_for(self.master_name, db=_db_of(self.url), **options)

    def where(self) -> str:
        if self.sentinels:
            hosts = ", ".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.master_name!r} via {hosts}"
        return redact_url(self.url)


MASTER_TIMEOUT = 0.75  # below 1 s with room for the rest of the turn: `status` answers within 1 s


def master_client(config: Config) -> Redis:
    """The master's own client: short timeouts and no retries, so a hung Redis holds the loop
    for one timeout at most (redis-py 8 retries 10 times by default; the loop retries itself).
    Named (CLIENT LIST shows horizond-master-HOST-PID), so its share of Redis's load is visible."""
    return RedisSpec.of(config).client(socket_timeout=MASTER_TIMEOUT, socket_connect_timeout=MASTER_TIMEOUT,
                                       retry=Retry(NoBackoff(), 0), client_name=master_client_name())


def master_client_name(pid: int | None = None) -> str:
    return f"horizond-master-{sysutil.hostname()}-{pid or os.getpid()}"


def _db_of(url: str) -> int:
    tail = url.split("://", 1)[-1].split("?", 1)[0].rsplit("/", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0
