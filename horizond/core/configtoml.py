"""The effective config as TOML-ready data: what `horizonctl config show` prints.

Apart from config.py (which parses) because it is the way out, not in: every table's keys
written back with their values in force, the Redis password redacted.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from horizond.core import slo, webconfig
from horizond.core.config import Config, redact_url


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The effective config as TOML-ready data (what `horizonctl config show` prints)."""
    sups = {}
    for sup in config.supervisors:
        entry = {f.name: getattr(sup, f.name) for f in fields(sup) if f.name != "name"}
        entry = {k: list(v) if isinstance(v, tuple) else v for k, v in entry.items() if v is not None}
        sups[sup.name] = entry
    return {
        "redis": {"url": redact_url(config.redis_url), "prefix": config.redis_prefix, **dict(config.redis_files),
                  **({"sentinels": list(config.redis_sentinels), "master_name": config.redis_master_name}
                     if config.redis_sentinels else {})},
        "control": {k: v for k, v in (("socket", config.socket_path), ("group", config.control_group),
                                       ("readers", config.control_readers),
                                       ("user", config.control_user)) if v is not None},
        "app": {"paths": list(config.app_paths), "preload": list(config.preload)},
        "master": {"shutdown_grace": config.shutdown_grace, "hard_timeout_grace": config.hard_timeout_grace,
                   "memory_limit": config.memory_limit},
        "health": {name: list(pair) for name, pair in config.health_thresholds().items()},
        "metrics": {**({"listen": config.metrics_listen} if config.metrics_listen else {}),
                    "snapshot_interval": config.snapshot_interval, "snapshot_keep_hours": config.snapshot_keep_hours},
        "notify": {k: v for k, v in (("command", list(config.notify_command)),
                                     ("webhook_url", config.webhook_url)) if v},
        "waits": dict(config.waits),
        "web": webconfig.to_toml(config),
        "fleet": {**({"node": config.fleet_node} if config.fleet_node else {}), "heartbeat": config.fleet_heartbeat},
        "supervisors": sups,
        **_cron_toml(config),
        **({"breakers": {b.name: {"queues": list(b.queues), "failures": b.failures, "window": b.window,
                                  "cooldown": b.cooldown, "max_cooldown": b.max_cooldown,
                                  **({"exceptions": list(b.exceptions)} if b.exceptions else {})}
                         for b in config.breakers}} if config.breakers else {}),
        **({"limits": {lim.pattern: {**({"concurrency": lim.concurrency} if lim.concurrency else {}),
                                     **({"rate": list(lim.rate)} if lim.rate else {})}
                       for lim in config.limits}} if config.limits else {}),
        **({"slo": slo.to_toml(config.slos)} if config.slos else {}),
    }


def _cron_toml(config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if config.cron:
        out["cron"] = {e.name: {"cron": e.cron, "func": e.func, "queue": e.queue, "args": list(e.args),
                                "kwargs": dict(e.kwargs), "timezone": e.timezone} for e in config.cron}
    if config.maintenance is not None:
        m = config.maintenance
        out["maintenance"] = {"cron": m.cron, "timezone": m.timezone,
                              **({"prune_failed_hours": m.prune_failed_hours} if m.prune_failed_hours else {})}
    return out
