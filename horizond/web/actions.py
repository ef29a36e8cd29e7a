"""Every change the dashboard makes is a request to the command layer, as the signed-in user.

The dashboard is one more transport over `CommandLayer.handle(request, access)`
(control/commands.py), beside the control socket and the fleet's channel: an admin's request
runs with access "full", a viewer's with "read", so the layer's own READ_ONLY rule refuses a
viewer's retry exactly as it refuses a read-only socket client's. The daemon under the layer is
the web process's (web/daemon.py): job commands act on RQ's registries (the same code
`horizonctl retry|forget|flush|clear` runs), supervisor actions are the `fleet` command
(`horizonctl pause --fleet`), a queue's pause is `queue_pause`. The routes only parse the form,
call `run` and render the reply.

Bulk actions (retry or delete every failed job matching a filter) are the layer's chunked walks
(`retry all --match TEXT`, `flush --match TEXT`: each request works for at most half a second
and returns a cursor). The first chunk runs in the POST itself, so a refusal or a bad filter
answers it and changes nothing; the rest run in a thread of the web process (never the master),
which records the progress in `P:web:bulk:ID` (a hash, kept a day) for the progress page.
"""

from __future__ import annotations

import secrets
import threading
import time

from redis import Redis

from horizond.control.commands import DENIED, FULL, READ, CommandLayer
from horizond.web import reads
from horizond.web.auth import Identity
from horizond.web.daemon import WebDaemon

BULK_TTL = 24 * 3600
BULK_COMMANDS = {"retry": "retry", "delete": "flush"}
SUPERVISOR_ACTIONS = ("pause", "continue", "restart", "scale")
UNREACHABLE = "Redis unreachable"  # how the layer's reply begins when Redis did not answer


class ActionError(Exception):
    """The layer's refusal: its error text, and the HTTP status to answer it with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def ask(daemon: WebDaemon, me: Identity, cmd: str, **args) -> dict:
    """The layer's reply to `cmd` from this user: admins have full access, viewers read access."""
    layer = CommandLayer(daemon.acting_as(me.name))
    return layer.handle({"cmd": cmd, "args": args}, FULL if me.admin else READ)


def run(daemon: WebDaemon, me: Identity, cmd: str, **args):
    """`ask`, for a route: the result, or ActionError (403 for want of access, 503 while Redis is
    away, else 400)."""
    reply = ask(daemon, me, cmd, **args)
    if not reply["ok"]:
        error = reply["error"]
        raise ActionError(error, 403 if error.startswith(DENIED) else 503 if error.startswith(UNREACHABLE) else 400)
    return reply["result"]


def supervisor_args(action: str, supervisor: str, processes: str | None) -> dict:
    """The `fleet` command's arguments from the Overview's forms (a count only with scale)."""
    args = {"action": action, "supervisor": supervisor}
    if action == "scale":
        raw = (processes or "").strip()
        number = raw.isascii() and raw.isdigit() and len(raw) <= 9  # not "²", not 5,000 digits
        args["processes"] = int(raw) if number else raw  # 'auto' or junk: the layer says which
    return args


# --- bulk: every failed job matching the filter, a chunk at a time ----------------------------

def start_bulk(daemon: WebDaemon, me: Identity, prefix: str, action: str, flt: reads.Filter) -> str:
    """Run the first chunk now (a refusal raises ActionError, nothing changed) and the rest in a
    thread; returns the bulk id whose progress `bulk_status` reads."""
    if action not in BULK_COMMANDS:
        raise ActionError(f"unknown bulk action {action!r}; expected retry or delete")
    redis = daemon.redis
    names = [flt.queue] if flt.queue else reads.queue_names(redis)
    with redis.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zcard(f"rq:failed:{q}")
        total = sum(pipe.execute())
    cmd, args = BULK_COMMANDS[action], _walk_args(action, flt)
    first = run(daemon, me, cmd, cursor=None, **args)
    bulk_id = secrets.token_hex(8)
    key = f"{prefix}:web:bulk:{bulk_id}"
    redis.hset(key, mapping={"action": action, "queue": flt.queue, "text": flt.text, "user": me.name,
                             "state": "running", "done": 0, "chunks": 0, "total": total, "registry": 0,
                             "registries": len(names), "started": time.time(), "updated": time.time()})
    redis.expire(key, BULK_TTL)
    cursor = _record(redis, key, first, len(names))
    if cursor is not None:
        threading.Thread(target=_run_bulk, args=(daemon, me, key, cmd, args, cursor, len(names)), daemon=True,
                         name=f"bulk-{bulk_id}").start()
    return bulk_id


def _walk_args(action: str, flt: reads.Filter) -> dict:
    args = {"queue": flt.queue or None, **({"match": flt.text} if flt.text else {})}
    return {"all": True, **args} if action == "retry" else args


def _record(redis: Redis, key: str, result: dict, registries: int):
    """Add one chunk's reply to the progress hash; the cursor to go on from (None: done)."""
    done = result.get("retried", result.get("deleted"))
    cursor = result["cursor"]
    with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, "done", done if isinstance(done, int) else len(done))
        pipe.hincrby(key, "chunks", 1)
        pipe.hset(key, mapping={"registry": cursor[0] if cursor else registries, "updated": time.time(),
                                **({} if cursor else {"state": "done"})})
        pipe.execute()
    return cursor


def _run_bulk(daemon: WebDaemon, me: Identity, key: str, cmd: str, args: dict, cursor: list, registries: int) -> None:
    try:
        while cursor is not None:
            reply = ask(daemon, me, cmd, cursor=cursor, **args)
            if not reply["ok"]:
                daemon.redis.hset(key, mapping={"state": "failed", "error": reply["error"][:500]})
                return
            cursor = _record(daemon.redis, key, reply["result"], registries)
    except Exception as exc:  # Redis away while recording: shown on the progress page once it is back
        daemon.redis.hset(key, mapping={"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})


def bulk_status(redis: Redis, prefix: str, bulk_id: str) -> dict | None:
    raw = redis.hgetall(f"{prefix}:web:bulk:{bulk_id}") if bulk_id.isalnum() else {}
    if not raw:
        return None
    status = {reads.text(k): reads.text(v) for k, v in raw.items()}
    if status["state"] == "running" and time.time() - float(status["updated"]) > 60:
        status["state"] = "stalled"  # its web process died: start it again to finish
    return status
