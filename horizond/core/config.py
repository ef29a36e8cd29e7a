"""Configuration: TOML text -> validated, frozen dataclasses.

Pure: no file, socket or process is touched here (the caller reads the file and
passes environment facts in), so every rule can be tested exhaustively. Errors are
collected, not raised one at a time, so `--check-config` can list them all.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from horizond.core import breakers, cron, limits, slo, webconfig
from horizond.core.configcheck import BAD as _BAD
from horizond.core.configcheck import Checker as _Checker
from horizond.core.configcheck import ConfigError, ConfigIssue  # noqa: F401 - part of this module's interface
from horizond.core.configcheck import int_ as _int
from horizond.core.configcheck import number as _number
from horizond.core.configcheck import plain as _plain
from horizond.core.configcheck import short as _short
from horizond.core.supervisorconfig import (  # noqa: F401 - part of this module's interface
    _SUPERVISOR_KEYS,
    MAX_BACKOFF_STEPS,
    MAX_FLEET_PROCESSES,
    MAX_MB,
    MAX_PROCESSES_CAP,
    MAX_SECONDS,
    SUPERVISOR_BOUNDS,
    SupervisorConfig,
    supervisors,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_SNAPSHOTS = 100_000  # per queue: snapshot_keep_hours x 3600 / snapshot_interval

# The bounds of the other tables' numeric keys (a supervisor's: supervisorconfig.py). What the
# check accepts is what runs; README "Bounds" lists the same table, and a test holds them together.
OTHER_BOUNDS: dict[tuple[str, str], tuple[float, float, str]] = {
    ("master", "shutdown_grace"): (0, 86_400, "s"),
    ("master", "hard_timeout_grace"): (0, 86_400, "s"),
    ("master", "memory_limit"): (0, MAX_MB, "MB"),
    ("metrics", "snapshot_interval"): (1, 86_400, "s"),
    ("metrics", "snapshot_keep_hours"): (1, 8_760, "h"),
    ("metrics", "listen"): (1, 65_535, ""),  # the port
    ("health", "*"): (0, 1_000_000_000, ""),  # warning and critical
    ("waits", "*"): (0, 31_536_000, "s"),
    ("redis", "url"): (0, 2**31 - 1, ""),  # the db number
    ("fleet", "heartbeat"): (0.1, 3600, "s"),
}
FLEET_NODE_MAX = 128  # characters of a [fleet] node id (it is part of Redis key names)
DEFAULT_HEARTBEAT = 2.0


@dataclass(frozen=True)
class Config:
    redis_url: str
    socket_path: str
    supervisors: tuple[SupervisorConfig, ...]
    app_paths: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    shutdown_grace: float = 10.0
    hard_timeout_grace: float = 10.0  # a job this far past its timeout gets its worker killed
    memory_limit: int = 0  # MB of master RSS; over it the master drains and re-executes itself
    # [health] thresholds, defaults merged in: ((name, (warning, critical)), ...)
    health: tuple[tuple[str, tuple[float, float]], ...] = field(
        default_factory=lambda: tuple(sorted(_default_health().items())))
    metrics_listen: str | None = None  # "HOST:PORT" for /metrics and /healthz; None = off
    snapshot_interval: int = 60  # seconds between metric snapshots kept in Redis (for trends)
    snapshot_keep_hours: int = 24
    redis_prefix: str = "horizond"  # horizond's own keys, so deployments can share one Redis
    # [redis] password_file / ssl_* paths, and the password itself once read ($REDIS_PASSWORD or
    # the file): kept out of repr so it never reaches a log line
    redis_files: tuple[tuple[str, str], ...] = ()
    redis_password: str | None = field(default=None, repr=False)
    redis_sentinels: tuple[str, ...] = ()  # "host:port" of Redis Sentinels; then redis_url only gives the db
    redis_master_name: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    notify_command: tuple[str, ...] = ()  # run on a long wait (argv, no shell), details as JSON on stdin
    webhook_url: str | None = None  # POSTed the same JSON on a long wait
    waits: tuple[tuple[str, int], ...] = ()  # [waits]: queue or pattern -> seconds (0 = never)
    control_group: str | None = None  # full control for its members
    control_readers: str | None = None  # read-only commands for its members
    control_user: str | None = None  # the daemon's user when not root: the only other uid horizonctl trusts
    cron: tuple[cron.CronEntry, ...] = ()  # [cron.NAME]: periodic jobs, once per occurrence fleet-wide
    maintenance: cron.CronEntry | None = None  # [maintenance]: failed-job pruning on a schedule
    limits: tuple[limits.QueueLimit, ...] = ()  # [limits."PATTERN"]: concurrency and start rate, fleet-wide
    breakers: tuple[breakers.Breaker, ...] = ()  # [breakers.NAME]: circuit breakers over queues, fleet-wide
    slos: tuple[slo.SloTarget, ...] = ()  # [slo."PATTERN"]: service levels per queue, measured fleet-wide
    web_listen: str | None = None  # [web]: the dashboard's "HOST:PORT"; None = off (webconfig.py)
    web_base_path: str = "/horizon"
    web_users_file: str | None = None
    web_proxy_user_header: str | None = None
    fleet_node: str | None = None  # [fleet] node: this master's id in the fleet; None = the host name
    fleet_heartbeat: float = DEFAULT_HEARTBEAT  # [fleet] heartbeat: seconds between membership writes
    source: str = "<embedded default>"
    embedded: bool = False

    def supervisor(self, name: str) -> SupervisorConfig | None:
        return next((s for s in self.supervisors if s.name == name), None)

    def redis_options(self) -> dict:
        """Keyword arguments for redis.Redis.from_url, shared by master, workers and scheduler."""
        options = {k: v for k, v in self.redis_files if k.startswith("ssl_")}
        if self.redis_password:
            options["password"] = self.redis_password
        return options

    def wait_threshold(self, queue: str) -> int:
        """Seconds of estimated wait that count as long for this queue: exact name, then
        the first matching pattern, then "*", else 60 (Horizon's default). 0 = never."""
        import fnmatch

        waits = dict(self.waits)
        if queue in waits:
            return waits[queue]
        return next((v for k, v in self.waits if fnmatch.fnmatchcase(queue, k)), 60)

    def health_thresholds(self) -> dict[str, tuple[float, float]]:
        return {**_default_health(), **dict(self.health)}

    def all_queues(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for sup in self.supervisors:
            seen.update(dict.fromkeys(sup.queues))
        return tuple(seen)


@dataclass(frozen=True)
class Env:
    """The facts from outside the file that shape the result."""

    redis_url: str | None = None
    socket_path: str | None = None
    uid: int = 0
    runtime_dir: str | None = None  # $XDG_RUNTIME_DIR
    service_dir: str | None = None  # $RUNTIME_DIRECTORY, set by systemd's RuntimeDirectory=


def default_socket_path(env: Env) -> str:
    """A service uses its systemd runtime dir, root /run; a user gets a private runtime dir."""
    if env.service_dir:
        return f"{env.service_dir.split(':')[0]}/horizond.sock"
    if env.uid == 0:
        return "/run/horizond/horizond.sock"
    if env.runtime_dir:
        return f"{env.runtime_dir}/horizond/horizond.sock"
    return f"/tmp/horizond-{env.uid}/horizond.sock"


# --- key schemas -------------------------------------------------------------

_TABLES: dict[str, set[str]] = {
    "redis": {"url", "prefix", "password_file", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "sentinels",
              "master_name", "sentinel_password_file"},
    "control": {"socket", "group", "readers", "user"},
    "app": {"paths", "preload"},
    "master": {"shutdown_grace", "memory_limit", "hard_timeout_grace"},
    "health": {"failed_jobs", "queue_size", "oldest_job_age", "worker_memory"},
    "metrics": {"listen", "snapshot_interval", "snapshot_keep_hours"},
    "notify": {"command", "webhook_url"},
    "fleet": {"node", "heartbeat"},
    "waits": set(),  # queue names or patterns -> seconds
    "web": webconfig.KEYS,
    "defaults": _SUPERVISOR_KEYS,
    "supervisors": set(),  # names are free-form
    "cron": set(),  # [cron.NAME]: names are free-form (core/cron.py)
    "maintenance": {"cron", "prune_failed_hours", "timezone"},
    "limits": set(),  # [limits."PATTERN"] (core/limits.py)
    "breakers": set(),  # [breakers.NAME] (core/breakers.py)
    "slo": set(),  # [slo."PATTERN"] (core/slo.py)
}


# --- whole file# --- whole file ------------------------------------------------------------------


def parse(text: str | bytes, source: str, env: Env = Env()) -> Config:
    """Parse and validate config text (or the file's bytes); raise ConfigError listing every problem."""
    def refused(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(source, "", None, message)])

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise refused(f"not UTF-8 text: byte 0x{text[exc.start]:02x} at line {line}, offset {exc.start}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise refused(f"not valid TOML: {exc}") from None
    except RecursionError:
        raise refused("not valid TOML here: arrays or tables nested too deeply") from None
    try:
        return build(data, source, env)
    except RecursionError:
        raise refused("values nested too deeply") from None


def build(data: Mapping[str, Any], source: str, env: Env = Env()) -> Config:
    check = _Checker(source)
    check.unknown_keys("", data, set(_TABLES))
    tables = {name: check.table("", data, name) for name in _TABLES}
    for name, allowed in _TABLES.items():
        if name not in ("supervisors", "waits", "cron", "maintenance", "limits", "breakers", "slo"):
            check.unknown_keys(name, tables[name], allowed)
    fields_ = {**_redis(check, tables["redis"], env), **_control(check, tables["control"], env),
               **_master(check, tables["master"]), **_observability(check, tables), **_fleet(check, tables["fleet"]),
               **webconfig.web_fields(check, tables["web"]),
               "supervisors": supervisors(check, tables),
               "app_paths": check.get("app", tables["app"], "paths", "strs", ()),
               "preload": check.get("app", tables["app"], "preload", "strs", ()),
               **cron.parse_tables(check, tables["cron"], tables["maintenance"]),
               "limits": limits.parse_table(check, tables["limits"]),
               "breakers": breakers.parse_table(check, tables["breakers"]),
               "slos": slo.parse_table(check, tables["slo"])}
    if check.issues:
        raise ConfigError(_unique(check.issues))
    return Config(source=source, **fields_)


def is_pattern(name: str) -> bool:
    """A queue name with glob characters stands for every queue it matches."""
    return any(c in name for c in "*?[")


def _redis(check: _Checker, t: Mapping[str, Any], env: Env) -> dict:
    url = env.redis_url or check.get("redis", t, "url", "str", DEFAULT_REDIS_URL)
    files = tuple((key, value) for key in ("password_file", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                                           "sentinel_password_file")
                  if (value := check.get("redis", t, key, "str", None)))
    sentinels = check.get("redis", t, "sentinels", "strs", ())
    master_name = check.get("redis", t, "master_name", "str", None)
    if any(_host_port(s) is None for s in sentinels):
        check.add("redis", "sentinels", f'expected a list of "host:port" (port 1-65535), got {list(sentinels)!r}')
    if sentinels and not master_name:
        check.add("redis", "master_name", "needed with sentinels: the name the sentinels monitor, e.g. \"mymaster\"")
    tls = [key for key, _ in files if key.startswith("ssl_")]
    if tls and not sentinels and not url.startswith("rediss://"):
        check.add("redis", tls[0], f"TLS files need a rediss:// url (or sentinels), got {redact_url(url)!r}")
    else:
        problem = _url_problem(url, {key: value for key, value in files if key.startswith("ssl_")})
        if problem:
            check.add("redis", "url", problem)
    prefix = check.get("redis", t, "prefix", "str", "horizond")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", prefix):
        check.add("redis", "prefix", f"expected letters, digits, '.', '_' or '-', got {prefix!r}")
    return {"redis_url": url, "redis_files": files, "redis_sentinels": sentinels, "redis_master_name": master_name,
            "redis_prefix": prefix}


def _url_problem(url: str, tls: dict[str, str]) -> str | None:
    """What redis-py would refuse in this URL once the daemon runs, found now.

    Building a connection object parses the URL and its options without any I/O.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return f"expected a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}"
    from redis import ConnectionPool
    from redis.exceptions import RedisError

    try:
        pool = ConnectionPool.from_url(url, **(tls if url.startswith("rediss://") else {}))
        pool.make_connection()
    except (ValueError, TypeError, RedisError) as exc:
        return f"{redact_url(url)!r} is not a usable Redis URL: {exc}"
    options = pool.connection_kwargs
    lo, hi, _ = OTHER_BOUNDS[("redis", "url")]
    if not isinstance(options.get("db", 0), int) or not lo <= options.get("db", 0) <= hi:
        return f"the db number must be between {lo} and {hi}, got {options.get('db')!r}"
    if url.startswith("unix://") and not options.get("path"):
        return f"a unix:// URL needs the socket's path, like unix:///run/redis/redis.sock, got {redact_url(url)!r}"
    return None


def _host_port(text: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" / "[v6]:port" with an ASCII host and a port 1-65535, else None."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]*):([0-9]{1,5})", text)
    if not match or not 1 <= int(match[2]) <= 65535:
        return None
    return match[1], int(match[2])


def _control(check: _Checker, t: Mapping[str, Any], env: Env) -> dict:
    socket_path = env.socket_path or check.get("control", t, "socket", "str", None) or default_socket_path(env)
    group = check.get("control", t, "group", "str", None)
    readers = check.get("control", t, "readers", "str", None)
    user = check.get("control", t, "user", "str", None)
    for key, value in (("group", group), ("readers", readers), ("user", user)):
        if value is not None and not value.strip():
            check.add("control", key, f"expected a {'user' if key == 'user' else 'group'} name, got an empty string")
    return {"socket_path": socket_path, "control_group": group, "control_readers": readers, "control_user": user}


def parse_control(text: bytes, source: str, env: Env = Env()) -> dict:
    """[control] alone, for horizonctl: finding the daemon must not depend on (or read) the
    rest of the file, such as a password_file only the service can open."""
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError([ConfigIssue(source, "", None, f"not a readable TOML file: {exc}")]) from None
    check = _Checker(source)
    table = check.table("", data, "control")
    check.unknown_keys("control", table, _TABLES["control"])
    fields_ = _control(check, table, env)
    if check.issues:
        raise ConfigError(_unique(check.issues))
    return fields_


def _bounded(check: _Checker, table: str, t: Mapping[str, Any], key: str, kind: str, default: Any) -> Any:
    value = check.get(table, t, key, kind, default)
    return value if check.within(table, key, value, OTHER_BOUNDS[(table, key)]) else default


def _master(check: _Checker, t: Mapping[str, Any]) -> dict:
    return {"shutdown_grace": _bounded(check, "master", t, "shutdown_grace", "number", 10.0),
            "hard_timeout_grace": _bounded(check, "master", t, "hard_timeout_grace", "number", 10.0),
            "memory_limit": _bounded(check, "master", t, "memory_limit", "int", 0)}


def _fleet(check: _Checker, t: Mapping[str, Any]) -> dict:
    """[fleet]: the node id names Redis keys (so a plain token), the heartbeat sets their expiry."""
    node = check.get("fleet", t, "node", "str", None)
    if node is not None and not (re.fullmatch(r"[A-Za-z0-9_.\-]+", node) and len(node) <= FLEET_NODE_MAX):
        check.add("fleet", "node",
                  f"expected 1 to {FLEET_NODE_MAX} letters, digits, '.', '_' or '-', got {_short(node)}")
        node = None
    return {"fleet_node": node,
            "fleet_heartbeat": _bounded(check, "fleet", t, "heartbeat", "number", DEFAULT_HEARTBEAT)}


def _observability(check: _Checker, tables: Mapping[str, Mapping[str, Any]]) -> dict:
    health = []
    lo, hi, _ = OTHER_BOUNDS[("health", "*")]
    for key in sorted(set(tables["health"]) & _TABLES["health"]):  # unknown keys were reported above
        pair = tables["health"][key]
        numbers = isinstance(pair, list) and len(pair) == 2 and all(_number(v) is not _BAD for v in pair)
        if not numbers or not lo <= pair[0] <= pair[1] <= hi:
            check.add("health", key, f"expected [warning, critical] with {lo} <= warning <= critical <= {_plain(hi)}, "
                                     f"got {_short(pair)}")
        else:
            health.append((key, (float(pair[0]), float(pair[1]))))
    metrics = tables["metrics"]
    listen = check.get("metrics", metrics, "listen", "str", None)
    if listen is not None and _host_port(listen) is None:
        check.add("metrics", "listen",
                  f'expected "HOST:PORT" with a port 1-65535, like "127.0.0.1:9750", got {_short(listen)}')
    interval = _bounded(check, "metrics", metrics, "snapshot_interval", "int", 60)
    keep = _bounded(check, "metrics", metrics, "snapshot_keep_hours", "int", 24)
    if keep * 3600 // interval > MAX_SNAPSHOTS:
        check.add("metrics", "snapshot_keep_hours", f"{keep} h of snapshots every {interval} s is "
                  f"{keep * 3600 // interval} per queue; at most {MAX_SNAPSHOTS} are kept (raise snapshot_interval)")
    webhook = check.get("notify", tables["notify"], "webhook_url", "str", None)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        check.add("notify", "webhook_url", f"expected an http:// or https:// URL, got {webhook!r}")
    waits = []
    lo, hi, _ = OTHER_BOUNDS[("waits", "*")]
    for key, value in tables["waits"].items():
        if _int(value) is _BAD or not lo <= value <= hi:
            check.add("waits", key, f"expected seconds (an integer from {lo} to {hi}; 0 = never), got {_short(value)}")
        else:
            waits.append((key, value))
    return {"health": tuple(sorted({**_default_health(), **dict(health)}.items())), "metrics_listen": listen,
            "snapshot_interval": interval, "snapshot_keep_hours": keep, "webhook_url": webhook,
            "notify_command": check.get("notify", tables["notify"], "command", "strs", ()), "waits": tuple(waits)}


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return list(dict.fromkeys(issues))


def _default_health() -> dict[str, tuple[float, float]]:
    from horizond.core.health import DEFAULTS

    return {k: (float(w), float(c)) for k, (w, c) in DEFAULTS.items()}


def embedded_default(env: Env = Env()) -> Config:
    """What runs when no config file exists at all: one supervisor on queue 'default'."""
    return Config(
        redis_url=env.redis_url or DEFAULT_REDIS_URL,
        socket_path=env.socket_path or default_socket_path(env),
        supervisors=(SupervisorConfig(name="default", queues=("default",)),),
        embedded=True,
    )


def redact_url(url: str) -> str:
    """Hide a password in a Redis URL so it never reaches logs or status output."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return _QUERY_PASSWORD.sub(r"\1***", url)
    creds, _, host = rest.rpartition("@")
    host = _QUERY_PASSWORD.sub(r"\1***", host)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}" if user or ":" in creds else f"{scheme}://***@{host}"


# redis-py also takes the password as a query argument (unix:///run/redis.sock?password=...).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
