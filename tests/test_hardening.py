"""The hardened unit: its exposure score, and horizond's main paths under the same restrictions.

systemd cannot run here (no systemd as PID 1 in the test's container), so the
second test rebuilds the unit's sandbox by hand: a private mount namespace with
the root file system read-only (ProtectSystem=strict, the test's directory as
ReadWritePaths=), no_new_privs and an empty capability bounding set (setpriv),
and seccomp filters built from the unit's own SystemCallFilter=,
RestrictAddressFamilies= and MemoryDenyWriteExecute= lines (tests/sandbox.py).
README "Hardening" lists what this does not cover.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request

import pytest
from redis import Redis
from rq import Queue

from conftest import ROOT, TESTS, Daemon, child_env, free_port, wait_until

UNIT = ROOT / "systemd/horizond.service"
SYSTEM_PYTHON = "/usr/bin/python3"


def test_the_unit_rates_ok_in_systemd_analyze_security():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (Debian package 'systemd')")
    result = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(UNIT)], capture_output=True,
                            text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout + result.stderr)
    if found is None and "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze cannot rate a unit file offline (systemd >= 250): {result.stderr}")
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= 2.5 and found[2] == "OK", result.stdout


def sandbox_prefix(writable) -> list[str]:
    """The unit's restrictions as a command prefix (see the module docstring)."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind / && exec "$@"', str(writable),
            "setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--",
            SYSTEM_PYTHON, str(TESTS / "sandbox.py"), str(UNIT), "--"]


def sandbox_or_skip(tmp_path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: unshare --mount and setpriv --bounding-set stand in for systemd here")
    for tool in ("unshare", "setpriv", "systemd-analyze", SYSTEM_PYTHON):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian packages util-linux, systemd, python3)")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode != 0:
        pytest.skip("Debian's python3-seccomp is not installed (scripts/test installs it as root)")
    prefix = sandbox_prefix(tmp_path)
    tried = subprocess.run([*prefix, sys.executable, "-c", "print('ok')"], capture_output=True, text=True)
    if tried.stdout.strip() != "ok":
        pytest.skip(f"this machine cannot build the sandbox (a container without mount namespaces?): {tried.stderr}")
    return prefix


class TLSServer:
    """Says hello over TLS to each connection, with a certificate the test made."""

    def __init__(self, tmp_path):
        self.cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(self.cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.sock = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello")

    def close(self):
        self.sock.close()


def answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def test_main_paths_work_under_the_units_restrictions(tmp_path):
    prefix = sandbox_or_skip(tmp_path)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian package 'openssl')")
    # Redis behind a Sentinel, as [redis] sentinels: the master discovers it over TCP
    r_port, s_port, m_port, w_port = free_port(), free_port(), free_port(), free_port()
    procs = [subprocess.Popen(["redis-server", "--port", str(r_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)]
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {s_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {r_port} 1\n")
    procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel", "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL))
    tls = TLSServer(tmp_path)
    notified = tmp_path / "notified"
    script = tmp_path / "notify.sh"
    script.write_text(f"#!/bin/sh\ncat > {notified}.tmp; mv {notified}.tmp {notified}\n")
    script.chmod(0o755)
    body = (f'[redis]\nsentinels = ["127.0.0.1:{s_port}"]\nmaster_name = "mymaster"\n'
            f'[metrics]\nlisten = "127.0.0.1:{m_port}"\n[web]\nlisten = "127.0.0.1:{w_port}"\n'
            f'[waits]\nqb = 1\n[notify]\ncommand = ["{script}"]\n'
            '[supervisors.alpha]\nqueues = ["qa"]\n[supervisors.beta]\nqueues = ["qb"]\n')
    client = Redis(port=r_port)
    wait_until(lambda: _quiet(client.ping), what="the test's redis-server")
    daemon = Daemon(tmp_path, "redis://127.0.0.1:1/0", body, redis_table=False, wrap=tuple(prefix))
    try:
        daemon.wait_ready({"alpha": 1, "beta": 1}, timeout=30)  # the control socket answers
        qa = Queue("qa", connection=client)
        fetched, probed = qa.enqueue("sandboxjobs.fetch_tls", tls.port, str(tls.cert)), qa.enqueue("sandboxjobs.probe")
        wait_until(lambda: fetched.get_status(refresh=True) in ("finished", "failed") and
                   probed.get_status(refresh=True) in ("finished", "failed"), 20, what="the jobs")
        assert fetched.return_value() == "hello over TLSv1.3", fetched.latest_result().exc_string
        # ...and the job really ran in the box: each forbidden thing was refused
        assert probed.return_value() == {
            "packet socket": "Address family not supported by protocol",
            "netlink socket": "Address family not supported by protocol", "chroot": "Operation not permitted",
            "setuid": "Operation not permitted", "write+exec memory": "Operation not permitted",
            "write /etc": "Read-only file system", "capabilities": "0000000000000000"}

        metrics = wait_until(lambda: answers(f"http://127.0.0.1:{m_port}/metrics"), 15, what="/metrics")
        assert "horizon_jobs_processed_total" in metrics
        assert wait_until(lambda: answers(f"http://127.0.0.1:{w_port}/horizon/"), 30, what="the dashboard child")

        ctl = [*prefix, sys.executable, "-m", "horizond.control.ctl", "--socket", daemon.socket]
        assert subprocess.run([*ctl, "pause", "beta"], env=child_env(), capture_output=True).returncode == 0
        Queue("qb", connection=client).enqueue("testjobs.record", "waits")
        wait_until(notified.exists, 20, what="the [notify] command to run")
        assert '"qb"' in notified.read_text()

        reloaded = subprocess.run([*ctl, "reload"], env=child_env(), capture_output=True, text=True)  # ExecReload=
        assert reloaded.returncode == 0, reloaded.stderr
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        log = daemon.log_path.read_text()
        assert "Operation not permitted" not in log and "not supported" not in log, log[-3000:]
    finally:
        daemon.cleanup()
        tls.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _quiet(call):
    try:
        return call()
    except Exception:
        return None
