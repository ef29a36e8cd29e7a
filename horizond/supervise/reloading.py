"""Reload: re-read the config file and apply only the difference to a running master.

An invalid file changes nothing (the running config is kept and the errors are
returned); a valid one adds, drains or replaces (rolling) just the supervisors
whose tables changed. A new Redis connection or app paths count as a change to
every supervisor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from horizond import appload
from horizond.connection.redisconn import RedisSpec, master_client
from horizond.control.server import SocketError
from horizond.core.config import Config, ConfigError

log = logging.getLogger("horizond.master")


def reload(master) -> dict:
    """Re-read the config file; apply the difference, or keep running the old one."""
    master.notifier.reloading()
    try:
        new = master.load_config()
        master.control.set_access(new.control_group, new.control_readers)
    except (ConfigError, OSError, SocketError) as exc:
        problems = [str(i) for i in exc.issues] if isinstance(exc, ConfigError) else [str(exc)]
        log.error("reload refused: configuration invalid; keeping the running one", extra={
            "event": "reload_refused", "errors": problems})
        master.notifier.ready()
        return {"applied": False, "errors": problems}
    summary = apply(master, new, time.monotonic())
    log.info("reload applied", extra={"event": "reload_applied", **summary})
    master.notifier.ready()
    return {"applied": True, **summary}


def apply(master, new: Config, now: float) -> dict:
    old = master.config
    everything = (RedisSpec.of(new), new.app_paths) != (RedisSpec.of(old), old.app_paths)
    added, removed, changed = [], [], []
    for name, sup in list(master.supervisors.items()):
        cfg = new.supervisor(name)
        if cfg is None:
            master.remove_supervisor(name, now)
            removed.append(name)
        elif cfg != sup.config or everything:
            sup.replace(cfg, now)
            changed.append(name)
    for cfg in new.supervisors:
        if cfg.name not in master.supervisors:
            master.add_supervisor(cfg, master.paused or master.fleet.wants_paused(cfg.name))  # held fleet-wide
            added.append(cfg.name)
    if new.socket_path != old.socket_path:
        log.warning("control socket path changes need a restart", extra={"event": "reload_partial"})
        new = replace(new, socket_path=old.socket_path)
    if RedisSpec.of(new) != RedisSpec.of(old):
        master.redis = master_client(new)
    appload.extend_sys_path(new.app_paths)
    master.config = new
    master.want_web()
    master.follow_queues(now)
    return {"added": added, "removed": removed, "changed": changed}
