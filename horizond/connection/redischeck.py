"""Redis settings that silently lose jobs, checked at start-up and by `horizonctl health`.

- maxmemory-policy other than noeviction lets Redis evict queued jobs under memory
  pressure (allkeys-lru, recommended by some old runbooks, does exactly that);
- Redis older than 6.2 lacks LMOVE, which reliable dequeue needs;
- no AOF and no RDB: a Redis restart loses every queued job (information only).
A wrong password or TLS setup stops the daemon at start-up with one clear line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis
from redis import exceptions as errors

from horizond.core.config import Config

log = logging.getLogger("horizond.redis")


class RedisSetupError(Exception):
    """Redis refuses us for good (credentials, TLS): retrying would not help."""


@dataclass(frozen=True)
class Finding:
    level: str  # "warning" | "info"
    code: str
    message: str


def inspect(redis: Redis) -> list[Finding]:
    server = redis.info("server")
    memory = redis.info("memory")
    persistence = redis.info("persistence")
    findings = []
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        findings.append(Finding("warning", "maxmemory_policy",
                                f"maxmemory-policy is {policy}: under memory pressure Redis may evict queued jobs. "
                                "Fix: CONFIG SET maxmemory-policy noeviction (and in redis.conf)"))
    version = tuple(int(p) for p in str(server.get("redis_version", "0")).split(".")[:2] if p.isdigit())
    if version < (6, 2):
        findings.append(Finding("warning", "redis_version",
                                f"Redis {server.get('redis_version')} lacks LMOVE (6.2+): dequeue is not reliable. "
                                "Fix: upgrade Redis to 6.2 or later"))
    aof = bool(persistence.get("aof_enabled"))
    try:
        rdb = bool(redis.config_get("save").get("save"))
    except errors.ResponseError:  # CONFIG disabled (managed Redis): do not guess
        rdb = True
    if not aof and not rdb:
        findings.append(Finding("info", "persistence",
                                "persistence is off (no AOF, no RDB): a Redis restart loses every queued job"))
    return findings


def at_startup(redis: Redis, config: Config) -> Exception | None:
    """Refuse to start on credentials/TLS errors; warn on risky settings; tolerate an outage.

    Returns the error when Redis is away (refused or hung), so the master starts knowing it
    and sends READY without waiting for it: systemd would time out the start and restart us."""
    from horizond.connection.redisconn import RedisSpec

    where = RedisSpec.of(config).where()
    try:
        redis.ping()
        findings = inspect(redis)
    except (errors.AuthenticationError, errors.AuthorizationError) as exc:
        raise RedisSetupError(f"[redis] {where}: authentication failed ({exc}); check the password "
                              "([redis] url, password_file or $REDIS_PASSWORD)") from None
    except errors.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise RedisSetupError(f"[redis] {where}: authentication failed ({exc})") from None
        # e.g. a db number the check accepts (0-2147483647) above the server's `databases`
        raise RedisSetupError(f"[redis] {where}: the server refused the connection: {exc}") from None
    except (errors.ConnectionError, errors.TimeoutError) as exc:
        if "SSL" in str(exc) or "certificate" in str(exc).lower():
            raise RedisSetupError(f"[redis] {where}: TLS failed ({exc}); check ssl_ca_certs/ssl_certfile/"
                                  "ssl_keyfile") from None
        log.warning("Redis unreachable at start-up; workers wait for it", extra={
            "event": "redis_unreachable", "redis": where, "error": str(exc)})
        return exc
    for finding in findings:
        log.log(logging.WARNING if finding.level == "warning" else logging.INFO, finding.message,
                extra={"event": f"redis_{finding.code}", "redis": where})
    return None
