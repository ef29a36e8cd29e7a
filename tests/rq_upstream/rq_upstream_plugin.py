"""pytest plugin for RQ's upstream suite (loaded by scripts/rq-upstream with -p).

It checks that the test Redis and the worker under test are in place (see
rq_upstream_env), marks the tests listed in expected_failures.txt as
xfail(strict=True) when a horizond worker is under test (or skips them, where the
reason starts with "not run:"), and writes every test's
outcome, with the first line of its error, to RQ_UPSTREAM_REPORT as JSON.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest
import rq_upstream_env

EXPECTED_FAILURES = Path(__file__).with_name("expected_failures.txt")
LEAK_GRACE = 5.0  # seconds a test's leftover process gets to exit before it is killed
NOT_RUN = "not run:"  # a test that would kill the runner itself: skipped, not run as xfail
NO_HORSE = "[no horse]"  # fails under RQ's own SimpleWorker too (scripts/rq-upstream --worker simple)


def load_expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """test id -> reason, from lines `TEST_ID | REASON` (# starts a comment line)."""
    listed = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not test_id or not reason:
            raise pytest.UsageError(f"{path}:{number}: expected 'TEST_ID | REASON', got {line!r}")
        if test_id in listed:
            raise pytest.UsageError(f"{path}:{number}: {test_id} is listed twice")
        listed[test_id] = reason
    return listed


class Recorder:
    def __init__(self, mode: str, redis_port: int):
        self.mode = mode
        self.redis_port = redis_port
        self.tests: dict[str, dict] = {}
        self.unknown_expected: list[str] = []

    def pytest_collection_modifyitems(self, session, config, items):
        if self.mode == "stock":
            return
        listed = load_expected_failures()
        if self.mode == "simple":  # RQ's own SimpleWorker: only the tests that need a work horse fail
            listed = {t: r for t, r in listed.items() if r.startswith((NO_HORSE, NOT_RUN))}
        collected = {item.nodeid for item in items}
        files = {nodeid.split("::", 1)[0] for nodeid in collected}
        self.unknown_expected = sorted(t for t in listed if t not in collected and t.split("::", 1)[0] in files)
        for item in items:
            reason = listed.get(item.nodeid)
            if reason is None:
                continue
            if reason.startswith(NOT_RUN):
                item.add_marker(pytest.mark.skip(reason=reason))
            else:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    def pytest_collectreport(self, report):
        if report.failed:  # a module RQ's suite cannot import: its tests would silently be missing
            self.tests[report.nodeid] = dict(_new_entry(), outcome="error", message=_first_line(report))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item):
        yield
        leaked = _reap_children() + _leftover_threads()
        if leaked:
            self.tests.setdefault(item.nodeid, _new_entry())["leaked"] = leaked

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, _new_entry())
        entry["duration"] = round(entry["duration"] + report.duration, 3)
        if report.when == "call" and hasattr(report, "wasxfail"):
            entry["outcome"] = "xpassed" if report.passed else "xfailed"
            entry["message"] = report.wasxfail
        elif report.failed:
            if entry["outcome"] in ("passed", "xfailed"):
                entry["outcome"] = "failed" if report.when == "call" else "error"
                entry["message"] = _first_line(report)
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
            entry["message"] = getattr(report, "wasxfail", "") or _skip_reason(report)

    def pytest_sessionfinish(self, session):
        path = os.environ.get("RQ_UPSTREAM_REPORT")
        if not path:
            return
        Path(path).write_text(json.dumps({
            "mode": self.mode, "redis_port": self.redis_port, "unknown_expected_failures": self.unknown_expected,
            "tests": self.tests}, indent=1, sort_keys=True))

    def pytest_terminal_summary(self, terminalreporter):
        for test_id in self.unknown_expected:
            terminalreporter.write_line(f"expected_failures.txt lists {test_id}, which was not collected", red=True)


def _new_entry() -> dict:
    return {"outcome": "passed", "message": "", "duration": 0.0}


def _leftover_threads(grace: float = LEAK_GRACE) -> list[str]:
    """Non-daemon threads a test started and left running (a worker thread would take later
    tests' jobs). Daemon threads are RQ's own (its pub/sub listener lingers after a burst)."""
    deadline = time.monotonic() + grace
    left = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [f"thread {t.name}" for t in left if t.is_alive()]


def _reap_children(grace: float = LEAK_GRACE) -> list[str]:
    """Processes a test started and left running (a worker that never stopped would take
    the next tests' jobs): waited for briefly, then killed, and named for the report."""
    alive = [p for p in psutil.Process().children(recursive=True) if _running(p)]
    if not alive:
        return []
    _, alive = psutil.wait_procs(alive, timeout=grace)
    names = []
    for proc in alive:
        try:
            names.append(" ".join(proc.cmdline())[:200] or proc.name())
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return names


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _first_line(report) -> str:
    """The assertion or exception a failure ended with (pytest's crash line)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return " ".join(text.split())[:500]


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def pytest_configure(config):
    installed = rq_upstream_env.install()
    if not installed["redis_port"]:
        raise pytest.UsageError("RQ_UPSTREAM_REDIS_PORT is not set: run RQ's suite through scripts/rq-upstream")
    config.pluginmanager.register(Recorder(installed["mode"], installed["redis_port"]), "rq-upstream-recorder")
