"""Job functions the test daemons run (imported by workers through [app] paths)."""

import os
import time

from rq import get_current_job


def _redis():
    return get_current_job().connection


def record(tag):
    """Count one run of `tag`: a job that runs twice shows 2."""
    _redis().hincrby("test:runs", tag, 1)
    return tag


def sleep_then_record(seconds, tag):
    _redis().hset("test:started", tag, os.getpid())
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)
    return tag


def fail(tag):
    _redis().rpush(f"test:attempts:{tag}", time.time())
    raise RuntimeError(f"failing on purpose: {tag}")


def block(seconds, tag="block"):
    _redis().hset("test:started", tag, os.getpid())
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)


def record_pid(tag):
    _redis().hset("test:pids", tag, os.getpid())


def spawn_and_block(tag):
    """Start a grandchild process (as job code sometimes does), then block."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    _redis().hset("test:grandchild", tag, child.pid)
    _redis().hset("test:started", tag, os.getpid())
    time.sleep(300)


def mark_start(tag, seconds=0):
    """Record when the job started (wall clock), optionally run a while."""
    _redis().hset("test:start_time", tag, time.time())
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)


def systemd_vars(tag):
    """What job code (and anything it starts) sees of systemd's variables."""
    import subprocess

    seen = sorted(k for k in os.environ if k.startswith(("NOTIFY_SOCKET", "WATCHDOG_")))
    child = subprocess.run(["env"], capture_output=True, text=True).stdout
    seen += sorted(line.split("=")[0] for line in child.splitlines() if line.startswith(("NOTIFY_", "WATCHDOG_")))
    _redis().hset("test:env", tag, ",".join(seen) or "-")


def ignore_alarm_and_block(seconds, tag="stuck"):
    """Like code stuck in C: RQ's SIGALRM timeout cannot reach it."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    _redis().hset("test:started", tag, os.getpid())
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)


_HOARD = []


def hog(megabytes, seconds=0, tag="hog", keep=False):
    """Allocate (and touch) memory; keep=True leaks it in the worker like a real leak.

    The pid is recorded before the allocation: a memory_hard limit may kill the worker
    while it is still touching pages.
    """
    _redis().hset("test:started", tag, os.getpid())
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    if keep:
        _HOARD.append(block)
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)


def exit_zero(tag):
    """A job that ends its own process without an error code."""
    _redis().hincrby("test:attempts_exit", tag, 1)
    os._exit(0)


def pace(seconds, tag="pace"):
    time.sleep(seconds)
    _redis().hincrby("test:runs", tag, 1)
