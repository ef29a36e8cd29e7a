"""Redis with a password, secrets outside the config file, and settings that lose jobs."""

from __future__ import annotations

import json
import subprocess
import sys

from redis import Redis
from rq import Queue

from conftest import ROOT, Daemon, RedisServer, child_env, free_port, wait_until

SECRET = "s3cret-p4ss"
BODY = """
[supervisors.alpha]
queues = ["qa"]
"""


class SecuredRedis(RedisServer):
    def __init__(self, workdir, *extra):
        self.extra = extra
        super().__init__(workdir)

    def command(self):
        return super().command() + list(self.extra)


def test_password_from_a_file_works_and_never_shows(tmp_path):
    server = SecuredRedis(tmp_path, "--requirepass", SECRET)
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(SECRET + "\n")
    body = BODY.replace("[supervisors.alpha]", f'[redis]\npassword_file = "{secret_file}"\n\n[supervisors.alpha]')
    daemon = Daemon(tmp_path, server.url, body, redis_table=False)
    try:
        daemon.wait_ready({"alpha": 1})
        client = Redis.from_url(server.url, password=SECRET)
        Queue("qa", connection=client).enqueue("testjobs.record", "authed")
        wait_until(lambda: client.hget("test:runs", "authed") == b"1", what="a job through the password")
        shown = subprocess.run([sys.executable, "-m", "horizond.control.ctl",
                                "--socket", daemon.socket, "config", "show"],
                               capture_output=True, text=True, env=child_env(), cwd=ROOT)
        status = json.dumps(daemon.status())
        assert SECRET not in shown.stdout + status + daemon.log_path.read_text()
        assert "password_file" in shown.stdout
    finally:
        daemon.cleanup()
        server.stop()


def test_redis_password_env_overrides_and_a_wrong_one_is_one_clear_error(tmp_path):
    server = SecuredRedis(tmp_path, "--requirepass", SECRET)
    try:
        wrong = Daemon(tmp_path, server.url, BODY, env=child_env(REDIS_PASSWORD="nope"))
        assert wrong.wait_exit(20) == 2
        text = wrong.log_path.read_text()
        assert "authentication failed" in text and "Traceback" not in text and "nope" not in text
        assert text.count("authentication failed") == 1
        wrong.cleanup()
        right = Daemon(tmp_path, server.url, BODY, env=child_env(REDIS_PASSWORD=SECRET))
        try:
            right.wait_ready({"alpha": 1})
        finally:
            right.cleanup()
    finally:
        server.stop()


def test_an_evicting_maxmemory_policy_is_warned_about_and_yellow_in_health(tmp_path):
    server = SecuredRedis(tmp_path, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    daemon = Daemon(tmp_path, server.url, BODY)
    try:
        daemon.wait_ready({"alpha": 1})
        warned = [e for e in daemon.log_events() if e.get("event") == "redis_maxmemory_policy"]
        assert warned and "allkeys-lru" in warned[0]["message"] and "noeviction" in warned[0]["message"]
        result = subprocess.run([sys.executable, "-m", "horizond.control.ctl",
                                 "--socket", daemon.socket, "health", "--json"],
                                capture_output=True, text=True, env=child_env(), cwd=ROOT)
        verdict = json.loads(result.stdout)
        config = next(i for i in verdict["indicators"] if i["name"] == "redis_config")
        assert result.returncode == 1 and config["level"] == "yellow" and "maxmemory-policy" in config["detail"]
        persistence = next(i for i in verdict["indicators"] if i["name"] == "redis")
        assert "persistence is off" in persistence["detail"]  # information, not an error
    finally:
        daemon.cleanup()
        server.stop()


def test_unix_socket_url(tmp_path):
    path = tmp_path / "redis.sock"
    server = SecuredRedis(tmp_path, "--unixsocket", str(path), "--unixsocketperm", "700")
    daemon = Daemon(tmp_path, f"unix://{path}?db=0", BODY)
    try:
        daemon.wait_ready({"alpha": 1})
        client = Redis(unix_socket_path=str(path))
        Queue("qa", connection=client).enqueue("testjobs.record", "unix")
        wait_until(lambda: client.hget("test:runs", "unix") == b"1", what="a job over the unix socket")
    finally:
        daemon.cleanup()
        server.stop()


def test_tls_with_a_certificate_made_by_the_test(tmp_path):
    import shutil

    import pytest

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package 'openssl')")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                               str(cert), "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    url = f"rediss://127.0.0.1:{port}/0"
    client = Redis.from_url(url, ssl_ca_certs=str(cert))

    def up():
        try:
            return client.ping()
        except Exception:
            return False
    wait_until(up, what="the TLS redis-server")
    body = BODY.replace("[supervisors.alpha]", f'[redis]\nssl_ca_certs = "{cert}"\n\n[supervisors.alpha]')
    daemon = Daemon(tmp_path, url, body, redis_table=False)
    try:
        daemon.wait_ready({"alpha": 1})
        Queue("qa", connection=client).enqueue("testjobs.record", "tls")
        wait_until(lambda: client.hget("test:runs", "tls") == b"1", what="a job over TLS")
        daemon.cleanup()
        # without the CA the certificate cannot be verified: one clear error, no retry loop
        untrusted = Daemon(tmp_path, url, BODY)
        assert untrusted.wait_exit(20) == 2
        assert "TLS failed" in untrusted.log_path.read_text()
        untrusted.cleanup()
    finally:
        daemon.cleanup()
        server.terminate()
        server.wait(10)


def _redis_proc(tmp_path, name, *args):
    folder = tmp_path / name
    folder.mkdir()
    return subprocess.Popen(["redis-server", *args, "--dir", str(folder), "--logfile", str(folder / "log")],
                            stdout=subprocess.DEVNULL)


def test_sentinel_failover_is_followed_without_a_restart_and_loses_no_job(tmp_path):
    from redis.sentinel import Sentinel

    m_port, r_port, s_port = free_port(), free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    procs = [_redis_proc(tmp_path, "master", "--port", str(m_port), *common),
             _redis_proc(tmp_path, "replica", "--port", str(r_port), "--replicaof", "127.0.0.1", str(m_port),
                         *common)]
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {s_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {m_port} 1\n"
                    "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n")
    procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel", "--dir", str(tmp_path)],
                                  stdout=subprocess.DEVNULL))
    sentinel = Sentinel([("127.0.0.1", s_port)], socket_timeout=1)
    try:
        wait_until(lambda: _quiet(lambda: sentinel.sentinel_slaves("mymaster")), timeout=20,
                   what="the sentinel to see the replica")
        body = f"""[redis]
sentinels = ["127.0.0.1:{s_port}"]
master_name = "mymaster"

[supervisors.alpha]
queues = ["qa"]
min_processes = 2
"""
        daemon = Daemon(tmp_path, "redis://127.0.0.1:1/0", body, redis_table=False)
        procs.append(daemon)
        daemon.wait_ready({"alpha": 2})
        client = sentinel.master_for("mymaster", socket_timeout=2)
        queue = Queue("qa", connection=client)
        jobs = [queue.enqueue("testjobs.sleep_then_record", 0.02, f"j{i}") for i in range(300)]
        wait_until(lambda: client.hlen("test:runs") >= 60, what="jobs flowing through the first master")
        sentinel.sentinels[0].execute_command("SENTINEL", "FAILOVER", "mymaster")  # mid-run
        wait_until(lambda: sentinel.discover_master("mymaster")[1] == r_port, timeout=20, what="the failover")
        for i in range(50):
            jobs.append(_quiet(lambda i=i: queue.enqueue("testjobs.record", f"after{i}"), retries=20))
        wait_until(lambda: _quiet(lambda: all(j.get_status(refresh=True) == "finished" for j in jobs)),
                   timeout=60, interval=0.5, what="every job finished on the new master")
        runs = {k: int(v) for k, v in client.hgetall("test:runs").items()}
        assert len(runs) == 350  # none lost
        assert sum(runs.values()) - 350 <= 2  # at most the jobs in flight at the switch ran twice
        assert daemon.proc.poll() is None  # followed without a restart
    finally:
        for proc in procs:
            if isinstance(proc, Daemon):
                proc.cleanup()
            else:
                proc.terminate()
                proc.wait(10)


def _quiet(call, retries: int = 1):
    import time as _time

    for attempt in range(retries):
        try:
            return call()
        except Exception:
            if attempt == retries - 1:
                return None
            _time.sleep(0.2)
