"""The command lines: `horizond --check-config`, start-up refusal, and `horizonctl`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib

from conftest import ROOT, child_env, wait_until

HORIZOND = [sys.executable, "-m", "horizond"]
HORIZONCTL = [sys.executable, "-m", "horizond.control.ctl"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=kw.pop("env", child_env()), cwd=ROOT,
                          timeout=30, **kw)


def test_check_config_accepts_the_example_deployment():
    result = run(HORIZOND + ["--check-config", "--config", "etc/horizond.toml"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "OK: 6 supervisors" in result.stdout and "webhooks-high" in result.stdout


def test_check_config_names_a_misspelt_key_and_a_wrong_type(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[supervisors.webhooks]\nqueues = ["webhooks"]\ntimout = 90\nmax_processes = "30"\n')
    result = run(HORIZOND + ["--check-config", "--config", str(path)])
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert any(str(path) in x and "[supervisors.webhooks]" in x and "'timout'" in x and "did you mean 'timeout'" in x
               for x in lines), result.stderr
    assert any("'max_processes'" in x and "expected an integer" in x for x in lines), result.stderr


def test_a_bad_file_at_start_is_refused_before_anything_forks(tmp_path):
    path = tmp_path / "bad.toml"
    sock = tmp_path / "ctl.sock"
    path.write_text(f'[control]\nsocket = "{sock}"\n[supervisors.a]\nqueues = []\nmin_processes = 5\n'
                    'max_processes = 2\n')
    result = run(HORIZOND + ["--config", str(path)])
    assert result.returncode == 2
    assert "key 'queues'" in result.stderr and "min_processes (5) is greater than max_processes (2)" in result.stderr
    assert not sock.exists()


def test_a_missing_named_config_file_is_an_error_naming_it(tmp_path):
    result = run(HORIZOND + ["--check-config", "--config", str(tmp_path / "nope.toml")])
    assert result.returncode == 2 and "nope.toml" in result.stderr


def test_horizonctl_status_exits_2_when_nothing_runs(tmp_path):
    result = run(HORIZONCTL + ["--socket", str(tmp_path / "none.sock"), "status", "--json"])
    assert result.returncode == 2
    assert json.loads(result.stdout) == {"state": "not running"}


def test_horizonctl_status_and_config_show_against_a_running_daemon(start_daemon, redis_url):
    daemon = start_daemon("""
    [defaults]
    timeout = 45

    [supervisors.alpha]
    queues = ["qa", "qb"]
    min_processes = 1
    """)
    daemon.wait_ready({"alpha": 2})
    result = run(HORIZONCTL + ["--socket", daemon.socket, "status", "--json"])
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["state"] == "running" and status["pid"] == daemon.proc.pid
    [sup] = status["supervisors"]
    assert sup["name"] == "alpha" and sup["state"] == "running" and sup["processes"] == 2
    assert {q: (v["processes"], v["size"]) for q, v in sup["queues"].items()} == {"qa": (1, 0), "qb": (1, 0)}
    assert all(v["target"] == 1 and v["reason"] for v in sup["queues"].values())  # a pool per queue, at its floor
    table = run(HORIZONCTL + ["--socket", daemon.socket, "status"])
    assert table.returncode == 0 and "alpha" in table.stdout and "qa (0)" in table.stdout
    # the socket is found through the config file too
    shown = run(HORIZONCTL + ["--config", str(daemon.config), "config", "show"])
    assert shown.returncode == 0, shown.stderr
    effective = tomllib.loads(shown.stdout)
    assert effective["supervisors"]["alpha"]["timeout"] == 45  # [defaults] merged in
    assert effective["supervisors"]["alpha"]["queues"] == ["qa", "qb"]


def _raw(path: str, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_bad_control_requests_get_errors_and_change_nothing(start_daemon):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    assert "not JSON" in _raw(daemon.socket, b"{nope\n")["error"]
    assert "unknown command 'explode'" in _raw(daemon.socket, b'{"v": 1, "cmd": "explode"}\n')["error"]
    assert "bad arguments" in _raw(daemon.socket, b'{"v": 1, "cmd": "status", "args": {"x": 1}}\n')["error"]
    assert "too large" in _raw(daemon.socket, b'{"cmd": "' + b"x" * 70000 + b'"}\n')["error"]
    # a client that connects and says nothing does not block anyone
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(daemon.socket)
    try:
        assert daemon.status()["state"] == "running"
    finally:
        silent.close()


def test_a_second_daemon_does_not_steal_a_live_socket(start_daemon, tmp_path):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    second = run(HORIZOND + ["--config", str(daemon.config), "--log-format", "text"])
    assert second.returncode == 1
    assert "already listening" in second.stderr
    assert daemon.status()["pid"] == daemon.proc.pid


def test_a_stale_socket_from_a_dead_daemon_is_replaced(start_daemon):
    daemon = start_daemon("""
    [supervisors.alpha]
    queues = ["qa"]
    """)
    daemon.wait_ready({"alpha": 1})
    daemon.proc.kill()
    daemon.wait_exit()
    from conftest import Daemon

    again = Daemon(daemon.dir, daemon.redis_url, """
    [supervisors.alpha]
    queues = ["qa"]
    """)
    try:
        wait_until(lambda: (s := again.try_status()) and s["pid"] == again.proc.pid, what="the new daemon")
    finally:
        again.cleanup()
