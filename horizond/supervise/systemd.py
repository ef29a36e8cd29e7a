"""systemd notify protocol: READY, STATUS, RELOADING, STOPPING, WATCHDOG.

Without $NOTIFY_SOCKET every method is a no-op. The variables are removed from
the environment at start so workers and job code never inherit them.
"""

from __future__ import annotations

import os
import time

import sdnotify

_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
EXTEND_EVERY = 5.0
EXTEND_MARGIN = 15.0


class Notifier:
    def __init__(self, enabled: bool, watchdog_interval: float | None):
        self._notifier = sdnotify.SystemdNotifier() if enabled else None
        self.watchdog_interval = watchdog_interval
        self._last_watchdog = 0.0
        self._last_status = ""
        self._last_extend = -EXTEND_EVERY

    @classmethod
    def from_environ(cls) -> Notifier:
        enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        interval = None
        usec = os.environ.get("WATCHDOG_USEC", "")
        watchdog_pid = os.environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            interval = int(usec) / 1e6 / 2  # systemd asks for a ping at least every half period
        notifier = cls(enabled, interval)
        for name in _SYSTEMD_VARS:
            os.environ.pop(name, None)
        return notifier

    def fileno(self) -> int | None:
        sock = self._notifier.socket if self._notifier else None
        return sock.fileno() if sock else None

    def _send(self, text: str) -> None:
        if self._notifier:
            self._notifier.notify(text)

    def ready(self) -> None:
        self._send("READY=1")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def extend_timeout(self, now: float, remaining: float) -> None:
        """While a drain runs, keep systemd's stop timeout ahead of our own kill deadline."""
        if now - self._last_extend >= EXTEND_EVERY:
            self._last_extend = now
            self._send(f"EXTEND_TIMEOUT_USEC={int((max(0.0, remaining) + EXTEND_MARGIN) * 1e6)}")

    def watchdog_due_in(self, now: float) -> float | None:
        """Seconds until the next ping is due (the loop must wake by then)."""
        if not self.watchdog_interval:
            return None
        return self._last_watchdog + self.watchdog_interval * 0.9 - now

    def watchdog(self, now: float) -> None:
        if self.watchdog_interval and now - self._last_watchdog >= self.watchdog_interval * 0.9:
            self._last_watchdog = now
            self._send("WATCHDOG=1")
