"""Small Linux process helpers the master and its children share."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket

PR_SET_PDEATHSIG = 1
_libc = None


def _prctl():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel kill this process when its parent dies.

    `parent` is the pid the caller forked from: if it died before the prctl took
    effect, this process is already orphaned and leaves at once.
    """
    _prctl()(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


_HOSTNAME = socket.gethostname()


def hostname() -> str:
    return _HOSTNAME


def set_title(title: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except Exception:  # a cosmetic feature never stops a worker
        pass


def kill_group(pid: int, sig: int) -> None:
    """Signal a worker's process group (itself and anything its jobs started)."""
    for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass


def start_token(pid: int) -> str | None:
    """When `pid` started, as "TICKS.BOOT": clock ticks since boot and the boot's id.

    With the pid it names one process for good: a process that reuses the pid
    (after a crash, in a restarted container, after a reboot) has another token.
    None when /proc cannot tell (no such process).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip().replace("-", "")[:8]
    except (OSError, ValueError, IndexError):
        return None
    return f"{ticks}.{boot}"
