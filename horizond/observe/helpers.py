"""The [notify] command and webhook: child processes of the master, each reaped by its own handle.

The master forks workers, so it runs no threads (a fork copies only the forking
thread, and any lock another thread held stays locked in the child). A webhook
is therefore POSTed by a short-lived `python -I -c` process, not a thread. The
master reaps only the pids it knows (master.py); these helpers are waited for
here, by pid, through their Popen objects, so each exit status reaches the one
who asked for it and a failed command or POST is logged.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil

from horizond.core import restarts

log = logging.getLogger("horizond.observe")

WEBHOOK_TIMEOUT = 5.0
WEBHOOK_DEADLINE = 30.0  # killed past this (a DNS lookup may hang longer than the HTTP timeout)
_NAMES = {"command": "command", "url": "webhook"}
SECRETS = ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
_POST = f"""
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(),
                                 headers={{"Content-Type": "application/json"}})
try:
    urllib.request.urlopen(request, timeout={WEBHOOK_TIMEOUT}).close()
except Exception as exc:
    sys.stderr.write(f"{{type(exc).__name__}}: {{exc}}"[:500])
    sys.exit(1)
"""


@dataclass
class Helper:
    proc: subprocess.Popen
    what: str  # "command" | "url" (a webhook)
    target: str  # argv[0] or URL, for the log
    started: float = field(default_factory=time.monotonic)


class Helpers:
    def __init__(self):
        self.running: list[Helper] = []
        self.adopted: set[int] = set()  # helpers a previous image of this master left (re-exec)

    def adopt_leftovers(self) -> None:
        """At start, before any fork: any child already there was started by the image this
        master re-executed from (a helper still running); it is reaped here by its pid."""
        self.adopted = {child.pid for child in psutil.Process().children()}

    def notify(self, event: dict, command: tuple[str, ...], webhook: str | None) -> None:
        """Hand the event to the operator's command and/or webhook, never blocking the loop."""
        payload = json.dumps(event).encode()
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        if command:
            names = {"queue": "HORIZOND_QUEUE", "wait_seconds": "HORIZOND_WAIT", "threshold_seconds":
                     "HORIZOND_THRESHOLD", "breaker": "HORIZOND_BREAKER"}
            extra = {"HORIZOND_EVENT": event["event"],
                     **{var: str(event[key]) for key, var in names.items() if key in event}}
            self._start("command", command[0], list(command), dict(env, **extra), payload, subprocess.DEVNULL)
        if webhook:
            self._start("url", webhook, [sys.executable, "-I", "-c", _POST, webhook], env, payload,
                        subprocess.PIPE)

    def _start(self, what: str, target: str, argv: list[str], env: dict, payload: bytes, stderr) -> None:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                    env=env, start_new_session=True)
        except OSError as exc:
            log.error(f"notify {_NAMES[what]} failed", extra={"event": "notify_failed", what: target,
                                                              "error": str(exc)})
            return
        try:
            proc.stdin.write(payload)  # under 1 KB: fits the pipe, never blocks
            proc.stdin.close()
        except OSError:
            pass  # it exited without reading: its exit status says why
        self.running.append(Helper(proc, what, target))

    def reap(self, now: float) -> None:
        """Collect helpers that exited (by their own pid), log failures, kill a webhook past its deadline."""
        still = []
        for helper in self.running:
            code = helper.proc.poll()
            if code is None:
                if helper.what == "url" and now - helper.started > WEBHOOK_DEADLINE:
                    helper.proc.kill()
                still.append(helper)
                continue
            if code != 0:
                error = helper.proc.stderr.read().decode(errors="replace") if helper.proc.stderr else ""
                if not error:
                    error = f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
                log.error(f"notify {_NAMES[helper.what]} failed", extra={
                    "event": "notify_failed", helper.what: helper.target, "exit_code": code, "error": error})
            if helper.proc.stderr:
                helper.proc.stderr.close()
        self.running = still
        for pid in list(self.adopted):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:
                done = True
            if done:
                self.adopted.discard(pid)


class KeptChild:
    """A long-lived helper the master keeps running (the dashboard: `horizond web`).

    Started as its own program through Popen, not forked from the master's state, and never
    a thread: the master forks workers. Reaped by its own handle, restarted with the workers'
    crash-loop back-off (core/restarts.py) when it exits, restarted at once when what it was
    started with changes (a reload), stopped with the master.
    """

    def __init__(self, what: str):
        self.what = what
        self.proc: subprocess.Popen | None = None
        self.argv: list[str] | None = None
        self.env: dict | None = None
        self.token = None  # what it was started with: a change restarts it
        self.health = restarts.SlotHealth()
        self.started = 0.0
        self.leaving: list[subprocess.Popen] = []  # told to stop, not reaped yet

    def want(self, argv: list[str] | None, env: dict, token=None) -> None:
        """Run `argv` (None: nothing); a different argv or token replaces the running one."""
        if (argv, token) != (self.argv, self.token):
            self.stop()
            self.health = restarts.SlotHealth()
        self.argv, self.env, self.token = argv, env, token

    def keep(self, now: float) -> float | None:
        """Reap it if it exited, start it when due; seconds until it is next due (None: not waiting)."""
        if self.proc is not None and (code := self.proc.poll()) is not None:
            lived = now - self.started
            self.health = restarts.after_exit(self.health, failed=True, lived=lived, now=now,
                                              how=f"exit status {code}" if code >= 0 else f"signal {-code}")
            log.error(f"{self.what} exited; restarting it", extra={
                "event": "helper_exited", "helper": self.what, "pid": self.proc.pid, "exit_code": code,
                "restart_in": round(max(0.0, self.health.not_before - now), 1)})
            self.proc = None
        self.leaving = [p for p in self.leaving if p.poll() is None]
        if self.argv is None or self.proc is not None:
            return None
        if self.leaving:
            return 0.1  # the one it replaces still holds its port
        if not self.health.ready(now):
            return self.health.not_before - now
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self.health = restarts.after_exit(self.health, failed=True, lived=0.0, now=now, how=str(exc))
            log.error(f"cannot start the {self.what}", extra={"event": "spawn_failed", "child": self.what,
                                                               "error": str(exc)})
            return max(0.05, self.health.not_before - now)
        self.started = now
        log.info(f"{self.what} started", extra={"event": "helper_started", "helper": self.what, "pid": self.proc.pid})
        return None

    def stop(self, wait: float = 0.0) -> None:
        """SIGTERM; with `wait`, reap it here (killed past `wait` s), else keep() reaps it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.leaving.append(self.proc)
            self.proc = None
        if not wait:
            return
        for proc in self.leaving:
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.leaving = []
