"""Control commands: what each horizonctl request reads from or does to the master."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING

import tomli_w

from . import __version__
from .config import redact_url, to_toml_dict

if TYPE_CHECKING:
    from .master import Master


class Commands:
    def __init__(self, master: Master):
        self.master = master
        self._table = {"status": self.status, "config": self.config, "ping": self.ping}

    def handle(self, request: dict, peer: dict) -> dict:
        name = request["cmd"]
        command = self._table.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name!r}; known: {', '.join(sorted(self._table))}"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        try:
            inspect.signature(command).bind(**args)
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {name!r}: {exc}"}
        return command(**args)

    def ping(self) -> dict:
        return {"ok": True, "result": {"pid": self.master.pid}}

    def config(self) -> dict:
        cfg = self.master.config
        return {"ok": True, "result": {"toml": tomli_w.dumps(to_toml_dict(cfg)), "source": cfg.source}}

    def status(self) -> dict:
        master = self.master
        now = time.monotonic()
        sizes, redis_error = self._queue_sizes()
        sups = [sup.status(now, sizes) for sup in master.supervisors.values()]
        sups += [dict(sup.status(now, sizes), state="removed") for sup in master.removed]
        scheduler = master.scheduler.process
        return {"ok": True, "result": {
            "state": "stopping" if master.stopping else "running",
            "pid": master.pid,
            "version": __version__,
            "config": master.config.source,
            "uptime": round(time.time() - master.started, 1),
            "redis": {"url": redact_url(master.config.redis_url), "ok": redis_error is None, "error": redis_error},
            "scheduler": {"pid": scheduler.pid if scheduler else None,
                          "failures": master.scheduler.health.failures},
            "supervisors": sups,
        }}

    def _queue_sizes(self) -> tuple[dict[str, int | None], str | None]:
        queues = sorted({q for sup in self.master.supervisors.values() for q in sup.config.queues})
        try:
            with self.master.redis.pipeline(transaction=False) as pipe:
                for name in queues:
                    pipe.llen(f"rq:queue:{name}")
                return dict(zip(queues, pipe.execute(), strict=True)), None
        except Exception as exc:
            return {}, f"{type(exc).__name__}: {exc}"
