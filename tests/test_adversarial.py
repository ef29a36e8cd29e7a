"""Adversarial inputs (issue 13): nothing a file, socket, signal, job or worker sends takes the master down.

Each case was once a way to kill or stall a running master; each test here failed on the code
before its fix. They run in CI and each is bounded in time.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from rq import Queue

from conftest import ROOT, child_env, wait_until

HORIZOND = [sys.executable, "-m", "horizond"]
ONE = """
[supervisors.a]
queues = ["qa"]
min_processes = 1
max_processes = 2
"""

BAD_FILES = {
    "a byte that is not UTF-8 in a comment": b'# caf\xff\n[supervisors.a]\nqueues = ["qa"]\n',
    "an array nested 500 deep": b"x = " + b"[" * 500 + b"]" * 500 + b'\n[supervisors.a]\nqueues = ["qa"]\n',
    "an inline table nested 500 deep": b"x = " + b"{a = " * 500 + b"1" + b"}" * 500 + b"\n",
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_check_config_refuses_unreadable_files_without_a_traceback(tmp_path, content):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    result = subprocess.run(HORIZOND + ["--check-config", "--config", str(path)], capture_output=True, text=True,
                            env=child_env(), cwd=ROOT, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert str(path) in result.stderr
    assert ("not UTF-8 text: byte 0xff at line 1" in result.stderr
            or "nested too deeply" in result.stderr), result.stderr


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_reload_of_an_unreadable_file_is_refused_and_the_master_lives(start_daemon, redis, content):
    daemon = start_daemon(ONE)
    pids = {w["pid"] for w in daemon.wait_ready({"a": 1})["supervisors"][0]["workers"]}
    daemon.config.write_bytes(content)
    daemon.signal(signal.SIGHUP)
    refused = wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "reload_refused"],
                         what="the reload to be refused")
    assert any("not UTF-8" in err or "nested too deeply" in err for err in refused[0]["errors"]), refused
    assert daemon.proc.poll() is None
    assert {w["pid"] for w in daemon.status()["supervisors"][0]["workers"]} == pids
    Queue("qa", connection=redis).enqueue("testjobs.record", "after-bad-reload")
    wait_until(lambda: redis.hget("test:runs", "after-bad-reload") == b"1", what="jobs to keep running")
