"""The master's own memory limit: drain, then re-execute in place.

Why re-exec rather than exit: the pid stays (systemd's MainPID, the socket's
owner), no outside restart is needed, and operator state (paused supervisors,
pinned counts) is carried over in one environment variable. Why drain first:
workers are children of this process image; the new image starts its own.
"""

from __future__ import annotations

import json
import os
import sys

import psutil

STATE_VAR = "HORIZOND_RESUME_STATE"
MB = 1024 * 1024


def master_rss() -> int:
    return psutil.Process().memory_info().rss


def over_limit(limit_mb: int) -> int | None:
    """The master's RSS when it is over `limit_mb` (0 = no limit), else None."""
    if not limit_mb:
        return None
    rss = master_rss()
    return rss if rss > limit_mb * MB else None


def carried_state(paused_all: bool, supervisors) -> dict:
    return {"paused_all": paused_all,
            "paused": [s.name for s in supervisors if s.paused],
            "pinned": {s.name: s.pinned for s in supervisors if s.pinned is not None}}


def take_state(environ=os.environ) -> dict:
    """State handed over by the previous image (read once, then removed)."""
    try:
        return json.loads(environ.pop(STATE_VAR, "") or "{}")
    except ValueError:
        return {}


def execute(original_environ: dict, state: dict) -> None:
    """Replace this process with a fresh horizond, same arguments (never returns)."""
    env = dict(original_environ, **{STATE_VAR: json.dumps(state)})
    argv = [sys.executable, "-m", "horizond", *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
