"""systemd: the notify protocol seen on a real datagram socket, the unit file, journald fields."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import Queue, Worker

from conftest import ROOT, child_env, wait_until

SUPS = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2

[supervisors.beta]
queues = ["qb"]
"""


class Listener:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET (or journald's socket)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[tuple[float, bytes]] = []

    def next(self, predicate, timeout=15.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            self.seen.append((time.monotonic(), data))
            if predicate(data):
                return data
        raise AssertionError(f"no matching datagram within {timeout}s; saw {[d for _, d in self.seen][-5:]}")

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    listener = Listener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def fields_of(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)


def test_ready_after_workers_register_then_watchdog_status_reload_and_stopping(start_daemon, notify, redis):
    daemon = start_daemon(SUPS, env=child_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000"))
    notify.next(lambda d: d == b"READY=1")
    # READY only once every worker is registered in Redis
    assert Worker.count(connection=redis, queue=Queue("qa", connection=redis)) == 2
    assert Worker.count(connection=redis, queue=Queue("qb", connection=redis)) == 1
    status = next(d for _, d in notify.seen if d.startswith(b"STATUS="))  # kept current from the start
    assert b"2 supervisors" in status and b"redis ok" in status

    start = time.monotonic()
    while time.monotonic() - start < 3.0:
        notify.next(lambda d: d == b"WATCHDOG=1")
    pings = [t for t, d in notify.seen if d == b"WATCHDOG=1" and t >= start - 0.5]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert len(pings) >= 5 and max(gaps) <= 0.6  # at least every WATCHDOG_USEC/2

    daemon.signal(signal.SIGHUP)
    reloading = notify.next(lambda d: d.startswith(b"RELOADING=1"))
    fields = fields_of(reloading)
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert abs(int(fields["MONOTONIC_USEC"]) - now_usec) < 5_000_000
    notify.next(lambda d: d == b"READY=1")

    for queue in ("qa", "qb"):
        Queue(queue, connection=redis).enqueue("testjobs.systemd_vars", queue)
    wait_until(lambda: redis.hlen("test:env") == 2, what="jobs to report their environment")
    assert {v for v in redis.hvals("test:env")} == {b"-"}  # neither job code nor its children see them

    daemon.signal(signal.SIGTERM)
    notify.next(lambda d: d == b"STOPPING=1")
    assert daemon.wait_exit(20) == 0


def test_a_long_drain_extends_systemds_stop_timeout(start_daemon, notify, redis):
    daemon = start_daemon(SUPS, env=child_env(NOTIFY_SOCKET=notify.path))
    notify.next(lambda d: d == b"READY=1")
    Queue("qa", connection=redis).enqueue("testjobs.sleep_then_record", 3, "drain", job_timeout=30)
    wait_until(lambda: redis.hget("test:started", "drain"), what="the job to start")
    daemon.signal(signal.SIGTERM)
    extend = notify.next(lambda d: d.startswith(b"EXTEND_TIMEOUT_USEC="))
    # the job may run until its 30 s timeout + grace: systemd must wait at least that long
    assert int(fields_of(extend)["EXTEND_TIMEOUT_USEC"]) >= 30_000_000
    assert daemon.wait_exit(20) == 0


def test_no_watchdog_pings_for_someone_elses_watchdog_pid(start_daemon, notify):
    daemon = start_daemon(SUPS, env=child_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="200000",
                                              WATCHDOG_PID="1"))
    notify.next(lambda d: d == b"READY=1")
    daemon.wait_ready({"alpha": 2, "beta": 1})
    with pytest.raises(AssertionError):
        notify.next(lambda d: d == b"WATCHDOG=1", timeout=1.5)


def test_journal_gets_structured_fields(start_daemon, tmp_path):
    journal = Listener(tmp_path / "journal.sock")
    try:
        daemon = start_daemon(SUPS, env=child_env(HORIZOND_JOURNAL_SOCKET=journal.path))
        daemon.proc.terminate()  # restart it with --log-format journal
        daemon.wait_exit()
        daemon.cleanup()
        proc = subprocess.Popen([*daemon.proc.args[:-2], "--log-format", "journal"], env=child_env(
            HORIZOND_JOURNAL_SOCKET=journal.path), stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            started = parse_native(journal.next(lambda d: b"EVENT=master_started" in d))
            assert started["SYSLOG_IDENTIFIER"] == "horizond" and started["PRIORITY"] == "6"
            assert started["SUPERVISORS"] == '["alpha", "beta"]' and started["ROLE"] == "master"
            worker = parse_native(journal.next(lambda d: b"EVENT=worker_started" in d))
            assert worker["SUPERVISOR"] in ("alpha", "beta") and int(worker["PID"]) > 0
        finally:
            proc.terminate()
            assert proc.wait(20) == 0
    finally:
        journal.close()


def test_a_stalled_journal_does_not_stall_the_master(start_daemon, tmp_path):
    """journald not reading (its queue full) must not block the loop: lines go to stderr."""
    journal = Listener(tmp_path / "journal.sock")  # bound, never read
    try:
        daemon = start_daemon(SUPS)
        daemon.proc.terminate()
        daemon.wait_exit()
        daemon.cleanup()
        proc = subprocess.Popen([*daemon.proc.args, "--log-format", "journal"], env=child_env(
            HORIZOND_JOURNAL_SOCKET=journal.path), stderr=subprocess.PIPE, start_new_session=True)
        try:
            wait_until(lambda: daemon.try_status() and len(daemon.worker_pids()) == 3, timeout=20,
                       what="workers, with the journal full")
            proc.terminate()
            assert proc.wait(15) == 0
            assert b"horizond stopped" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        journal.close()


def parse_native(data: bytes) -> dict[str, str]:
    fields, i = {}, 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            i = end + 9 + size + 1
        fields[key.decode()] = value.decode()
    return fields


def test_native_encoding_keeps_multiline_values():
    from horizond.observe.journal import encode, field_name

    data = encode({"MESSAGE": "line one\nline two", "EVENT": "x"})
    assert parse_native(data) == {"MESSAGE": "line one\nline two", "EVENT": "x"}
    assert field_name("job_id") == "JOB_ID" and field_name("_x-y") == "X_Y"


def test_auto_log_format_picks_the_journal_when_stderr_is_journald(tmp_path, redis_url):
    journal = Listener(tmp_path / "journal.sock")
    stderr_file = open(tmp_path / "stderr", "wb")
    st = os.fstat(stderr_file.fileno())
    env = child_env(HORIZOND_JOURNAL_SOCKET=journal.path, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}",
                    REDIS_URL=redis_url, HORIZOND_SOCKET=str(tmp_path / "ctl.sock"), HORIZOND_CONFIG="")
    config = tmp_path / "c.toml"
    config.write_text('[supervisors.a]\nqueues = ["qa"]\n')
    proc = subprocess.Popen([*PY, "--config", str(config)], env=env, stderr=stderr_file, cwd=ROOT)
    try:
        journal.next(lambda d: b"EVENT=master_started" in d)
    finally:
        proc.terminate()
        proc.wait(20)
        stderr_file.close()
        journal.close()
    assert b"master_started" not in (tmp_path / "stderr").read_bytes()


PY = [os.environ.get("PYTHON_FOR_TESTS") or __import__("sys").executable, "-m", "horizond"]


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (Debian package 'systemd')")
    unit = (ROOT / "systemd/horizond.service").read_text()
    # verify checks that ExecStart's binary exists: point it at this checkout's venv
    venv_bin = Path(sys.executable).parent  # the venv running the tests (a worktree may have no .venv)
    horizond_bin = shutil.which("horizond") or str(venv_bin / "horizond")
    horizonctl_bin = shutil.which("horizonctl") or str(venv_bin / "horizonctl")
    unit = unit.replace("/usr/local/bin/horizond", horizond_bin).replace("/usr/local/bin/horizonctl", horizonctl_bin)
    path = tmp_path / "horizond.service"
    path.write_text(unit)
    result = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if str(path) in line or "horizond.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
