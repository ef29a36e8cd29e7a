"""What each signal does to the master: one table, installed at start, reset in children.

Any signal an operator or a common tool sends gets a defined behaviour; none
kills the master by its default action except SIGKILL (and SIGABRT, which is how
systemd's watchdog ends a hung master). README "Signals" lists the same table.

- TERM, INT: graceful stop; QUIT: stop now; HUP: reload; CHLD: reap (master.py).
- USR1: one `status_dump` log line (logrotate scripts send USR1 out of habit),
  at most one per DUMP_EVERY seconds.
- USR2, ALRM, IO, PWR, PROF, VTALRM: ignored, with a `signal_ignored` line at
  most once per LOG_EVERY seconds per signal (a kill loop cannot flood the log).
- PIPE, TTIN, TTOU: ignored by the kernel (SIG_IGN): a write to a closed pipe is
  an error, not death; a master started in the background of a terminal keeps
  running and writing its log instead of being stopped.
- TSTP, STOP, CONT, WINCH, URG: the defaults (job control; the rest are no-ops).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

log = logging.getLogger("horizond.master")

LOG_EVERY = 10.0
DUMP_EVERY = 1.0
STOP = (signal.SIGTERM, signal.SIGINT)
IGNORED_WITH_LOG = (signal.SIGUSR2, signal.SIGALRM, signal.SIGIO, signal.SIGPWR, signal.SIGPROF, signal.SIGVTALRM)
RECORDED = (*STOP, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, *IGNORED_WITH_LOG)
KERNEL_IGNORED = (signal.SIGPIPE, signal.SIGTTIN, signal.SIGTTOU)

_ignored: dict[int, tuple[float, int]] = {}  # signal -> (when last logged, how many since)
_last_dump = -DUMP_EVERY


def install(record: Callable) -> None:
    """The master's table: `record` only queues the signal; the loop acts on it."""
    for sig in RECORDED:
        signal.signal(sig, record)
    for sig in KERNEL_IGNORED:
        signal.signal(sig, signal.SIG_IGN)


def reset_in_child() -> None:
    """A forked child must not run the master's handlers: the defaults come back, except that
    PIPE, TTIN and TTOU stay ignored (a worker in its own process group writing its log to a
    terminal must not be stopped by SIGTTOU)."""
    for sig in RECORDED:
        signal.signal(sig, signal.SIG_DFL)


def ignored(sig: int, now: float | None = None) -> None:
    """Log that a signal with no meaning here was received (rate-limited), and do nothing else."""
    now = time.monotonic() if now is None else now
    last, count = _ignored.get(sig, (-LOG_EVERY, 0))
    if now - last < LOG_EVERY:
        _ignored[sig] = (last, count + 1)
        return
    _ignored[sig] = (now, 0)
    log.warning(f"{signal.Signals(sig).name} received: ignored", extra={
        "event": "signal_ignored", "signal": signal.Signals(sig).name, "also_since_last_line": count})


def dump_due(now: float | None = None) -> bool:
    """May SIGUSR1 log a status dump now? (A kill loop gets one line a second, not one per signal.)"""
    global _last_dump
    now = time.monotonic() if now is None else now
    if now - _last_dump < DUMP_EVERY:
        return False
    _last_dump = now
    return True
