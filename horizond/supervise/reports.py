"""What a worker may say on its state channel, checked before the master believes it.

The channel's other end is a process that runs job code: a job can write any
bytes to it. The master takes a report in only when every field has the type
and range its own worker code sends; anything else is a misbehaving worker
(process.py kills it, and its job is settled with that cause).
"""

from __future__ import annotations

import math
import os

MAX_TEXT = 4096  # job ids, names and function names longer than this are not ours
MAX_RSS = 1 << 50
MAX_TIMEOUT = 1 << 31
STATES = ("idle", "busy", "paused", "horse")


class BadReport(Exception):
    """A worker's message the master refuses to act on; the text says what is wrong."""


def check(message: dict, queues: tuple[str, ...], worker_pid: int) -> None:
    """Raise BadReport unless `message` is one a horizond worker sends."""
    unknown = set(message) - _FIELDS.keys()
    if unknown:
        raise BadReport(f"unknown field {sorted(unknown)[0]!r}")
    for key, value in message.items():
        _FIELDS[key](key, value)
    state = message.get("s")
    if state == "busy":
        for key in ("job", "q"):
            if key not in message:
                raise BadReport(f"'busy' without {key!r}")
        if queues and message["q"] not in queues:
            raise BadReport(f"'busy' on queue {message['q'][:80]!r}, which this worker does not serve")
    if state == "horse":
        if "pid" not in message:
            raise BadReport("'horse' without 'pid'")
        parent = parent_of(message["pid"])
        if message["pid"] == os.getpid() or parent not in (None, worker_pid):
            raise BadReport(f"'horse' pid {message['pid']} is not a child of worker {worker_pid}")


def _text(key, value, optional=False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise BadReport(f"{key!r} must be a string of 1 to {MAX_TEXT} characters, not {_show(value)}")


def _number(key, value, low: float, high: float, optional=True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadReport(f"{key!r} must be a number from {low:g} to {high:g}, not {_show(value)}")


def _count(key, value, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise BadReport(f"{key!r} must be a whole number from 0 to {high}, not {_show(value)}")


def _state(key, value) -> None:
    if value not in STATES:
        raise BadReport(f"'s' must be one of {', '.join(STATES)}, not {_show(value)}")


def _flag(key, value) -> None:
    if not isinstance(value, bool):
        raise BadReport(f"{key!r} must be true or false, not {_show(value)}")


def _pid(key, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 < value <= 1 << 22:
        raise BadReport(f"{key!r} must be a process id, not {_show(value)}")


_FIELDS = {
    "s": _state,
    "name": _text,
    "rss": lambda k, v: _number(k, v, 0, MAX_RSS, optional=False),
    "job": _text,
    "q": _text,
    "t": lambda k, v: _number(k, v, 0, 1e11),
    "timeout": lambda k, v: _number(k, v, -1, MAX_TIMEOUT),
    "func": lambda k, v: _text(k, v, optional=True),
    "ok": _flag,
    "wait": lambda k, v: _number(k, v, 0, 1e11),
    "runtime": lambda k, v: _number(k, v, 0, 1e11, optional=False),
    "pid": _pid,
    "held": lambda k, v: _count(k, v, 1 << 62),
}


def parent_of(pid: int) -> int | None:
    """The parent of a live process, None once it is gone (and reaped).

    A fork-per-job worker names its horse so that the master kills it too: only a
    child of that worker may be named, or a job could have the master SIGKILL any
    process group it likes. A horse already gone is forgotten, not killed later.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
