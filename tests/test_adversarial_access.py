"""Who may see and do what (issue 13, items 14-17), tried from real processes under real uids.

The clients here run as `nobody` (a forked process that drops root, then runs horizonctl's
own main()), so the access rules are exercised as a non-root user would meet them. The
daemon itself stays root: the interpreter lives under /root (mode 0700), which no other
user can read, so a daemon cannot be started under another uid on this machine.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import traceback

import psutil
import pytest
from redis import Redis
from rq import Queue, get_current_job
from test_redis_connection import SecuredRedis

from conftest import ROOT, Daemon, child_env, wait_until
from horizond.control import ctl

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="switching to other uids needs root")

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
SECRET = "s3cret-p4ss"
SENTINEL_SECRET = "sentinel-s3cret"
BODY = '[supervisors.alpha]\nqueues = ["qa"]\n'


def report_env(tag):
    """Job code: which secret variables it, and a process it starts, can see."""
    names = ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD")
    child = subprocess.run(["env"], capture_output=True, text=True).stdout
    seen = [n for n in names if n in os.environ] + [f"child:{line.split('=')[0]}" for line in child.splitlines()
                                                     if line.startswith(names)]
    get_current_job().connection.hset("test:env", tag, ",".join(seen) or "-")


def ctl_as(argv: list[str], env: dict, uid: int = NOBODY, gid: int = NOGROUP) -> tuple[int, str, str]:
    """horizonctl's main() in a forked process that has given up root: (exit code, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.environ.clear()
                os.environ.update(env)
                code = ctl.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 98
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


def operator_env() -> dict:
    """An operator's shell: no $CREDENTIALS_DIRECTORY, no $REDIS_PASSWORD."""
    return {k: v for k, v in child_env().items() if k not in ("CREDENTIALS_DIRECTORY", "REDIS_PASSWORD")}


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "horizond.control.ctl", *args], capture_output=True, text=True,
                          env=operator_env(), cwd=ROOT, timeout=30, stdin=subprocess.DEVNULL)




# --- 14: horizonctl needs none of the daemon's secrets -------------------------------------


@pytest.fixture
def credentialed_daemon(tmp_path, public_dir):
    """A daemon whose Redis password is a systemd-style credential only the service can read."""
    server = SecuredRedis(tmp_path, "--requirepass", SECRET)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "redis").write_text(SECRET + "\n")
    body = f'[redis]\npassword_file = "$CREDENTIALS_DIRECTORY/redis"\n\n{BODY}'
    daemon = Daemon(tmp_path, server.url, body, redis_table=False, socket_path=os.path.join(public_dir, "ctl.sock"),
                    extra_control='readers = "nogroup"\n', env=child_env(CREDENTIALS_DIRECTORY=str(credentials)))
    try:
        daemon.wait_ready({"alpha": 1})
        yield daemon
    finally:
        daemon.cleanup()
        server.stop()


def test_horizonctl_finds_the_daemon_without_its_password_file(credentialed_daemon):
    # the operator's shell, outside the service: no $CREDENTIALS_DIRECTORY
    shown = cli("--config", str(credentialed_daemon.config), "status")
    assert shown.returncode == 0, shown.stderr
    assert "alpha" in shown.stdout


@needs_root
def test_a_monitoring_user_who_cannot_read_the_credential_still_gets_status(credentialed_daemon, public_dir):
    readable = os.path.join(public_dir, "horizond.toml")
    shutil.copy(credentialed_daemon.config, readable)
    os.chmod(readable, 0o644)
    code, out, err = ctl_as(["--config", readable, "status"], operator_env())
    assert code == 0, err
    assert "alpha" in out and SECRET not in out + err


# --- 15: readers never see job data ----------------------------------------------------------


@needs_root
def test_a_reader_gets_failed_lists_without_arguments_or_tracebacks(start_daemon, redis, public_dir):
    daemon = start_daemon(textwrap.dedent("""
        [notify]
        webhook_url = "https://hooks.example.com/services/T0/B0/hook-token-123"
        command = ["/usr/bin/true", "--token", "cmd-token-456"]

        [supervisors.alpha]
        queues = ["qa"]
        """), socket_path=os.path.join(public_dir, "ctl.sock"), extra_control='readers = "nogroup"\n')
    daemon.wait_ready({"alpha": 1})
    job = Queue("qa", connection=redis).enqueue("testjobs.fail", "card-4111-1111")
    wait_until(lambda: job.get_status(refresh=True) == "failed", what="the job to fail")
    env = operator_env()
    where = ["--socket", daemon.socket]

    code, out, err = ctl_as([*where, "failed", "show", job.id], env)
    assert code == ctl.EXIT_ERROR and "needs full access" in err and "card-4111" not in out + err
    code, out, err = ctl_as([*where, "failed", "--json"], env)
    assert code == 0, err
    (listed,) = json.loads(out)
    assert listed["id"] == job.id and listed["exception"] == "RuntimeError"
    assert "card-4111" not in out
    code, out, err = ctl_as([*where, "config", "show"], env)
    assert code == 0, err
    assert "hook-token-123" not in out and "hooks.example.com" in out
    assert "cmd-token-456" not in out and "/usr/bin/true" in out
    # full access (root) still sees everything
    full = cli(*where, "failed", "show", job.id)
    assert full.returncode == 0 and "card-4111-1111" in full.stdout and "RuntimeError" in full.stdout
    assert "hook-token-123" in (shown := cli(*where, "config", "show").stdout) and "cmd-token-456" in shown


# --- 16: socket impersonation ---------------------------------------------------------------


@pytest.mark.parametrize("make_unsafe", [pytest.param("owned by nobody", marks=needs_root), "world-writable"])
def test_the_daemon_refuses_a_socket_directory_another_user_controls(start_daemon, public_dir, make_unsafe):
    directory = os.path.join(public_dir, "run")
    os.mkdir(directory)
    if make_unsafe == "owned by nobody":
        os.chown(directory, NOBODY, NOGROUP)
        os.chmod(directory, 0o755)
    else:
        os.chmod(directory, 0o777)  # mkdir's mode is cut by the umask
    daemon = start_daemon(BODY, socket_path=os.path.join(directory, "ctl.sock"))
    assert daemon.wait_exit(20) == 1
    failed = [e for e in daemon.log_events() if e.get("event") == "control_socket_failed"]
    assert failed and directory in failed[0]["message"], daemon.log_path.read_text()
    assert ("nobody" if make_unsafe == "owned by nobody" else "writable by everyone") in failed[0]["message"]
    assert not os.path.exists(os.path.join(directory, "ctl.sock"))


class Impostor:
    """A listener run by `nobody` in a directory it owns: what a socket swap would look like."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, "ctl.sock")
        ready_r, ready_w = os.pipe()
        got_r, got_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setgroups([])
                os.setgid(NOGROUP)
                os.setuid(NOBODY)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
                    server.bind(self.path)
                    os.chmod(self.path, 0o777)  # anyone is welcome to connect
                    server.listen(1)
                    os.write(ready_w, b"1")
                    server.settimeout(20)
                    conn, _ = server.accept()
                    conn.settimeout(5)
                    data = b""
                    while not data.endswith(b"\n") and (chunk := conn.recv(65536)):
                        data += chunk
                    os.write(got_w, json.dumps(data.decode(errors="replace")).encode())
                    if data:
                        conn.sendall(b'{"v": 1, "ok": false, "error": "captured by the impostor"}\n')
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(got_w)
        assert os.read(ready_r, 1) == b"1"
        os.close(ready_r)
        self._got = got_r

    def received(self) -> str:
        """What the client sent before it hung up (waits for the impostor to finish)."""
        with os.fdopen(self._got, "rb") as pipe:
            data = pipe.read()
        os.waitpid(self.pid, 0)
        return json.loads(data)


@needs_root
def test_horizonctl_sends_nothing_to_a_socket_served_by_another_user(public_dir, tmp_path):
    directory = os.path.join(public_dir, "evil")
    os.mkdir(directory)
    os.chown(directory, NOBODY, NOGROUP)
    impostor = Impostor(directory)
    refused = cli("--socket", impostor.path, "pause")
    assert refused.returncode == ctl.EXIT_ERROR
    assert "refusing to talk" in refused.stderr and "nobody" in refused.stderr
    assert impostor.received() == ""  # not one byte of root's request

    # the daemon's user named as [control] user is trusted: the request goes out
    config = tmp_path / "ctl.toml"
    config.write_text(f'[control]\nsocket = "{impostor.path}"\nuser = "nobody"\n')
    os.unlink(impostor.path)
    impostor = Impostor(directory)
    answered = cli("--config", str(config), "status")
    assert "captured by the impostor" in answered.stderr
    assert json.loads(impostor.received())["cmd"] == "status"


@needs_root
def test_horizonctl_trusts_the_user_root_gave_the_socket_directory_to():
    """Like systemd's RuntimeDirectory= under User=: /run/X made by root, then handed to the user."""
    parent = tempfile.mkdtemp(dir="/run", prefix="horizond-access-")
    try:
        os.chmod(parent, 0o755)
        directory = os.path.join(parent, "svc")
        os.mkdir(directory)
        os.chown(directory, NOBODY, NOGROUP)
        impostor = Impostor(directory)
        answered = cli("--socket", impostor.path, "status")
        assert "captured by the impostor" in answered.stderr
        assert json.loads(impostor.received())["cmd"] == "status"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@needs_root
def test_a_non_root_client_sends_nothing_to_a_socket_served_by_a_third_user(public_dir):
    """The same check from a non-root client (uid 1, `daemon`): `nobody` is neither root nor it."""
    directory = os.path.join(public_dir, "evil")
    os.mkdir(directory)
    os.chown(directory, NOBODY, NOGROUP)
    impostor = Impostor(directory)
    daemon_group = grp.getgrnam("daemon").gr_gid
    code, _, err = ctl_as(["--socket", impostor.path, "status"], operator_env(), uid=1, gid=daemon_group)
    assert code == ctl.EXIT_ERROR and "refusing to talk" in err, err
    assert impostor.received() == ""


@needs_root
def test_root_talks_to_a_daemon_running_as_another_user_once_config_names_it(redis_url, public_dir, tmp_path):
    """The service layout: the daemon runs as its own user, root operates it with horizonctl."""
    try:
        probe = subprocess.run([sys.executable, "-c", "import horizond, redis, rq"], user=NOBODY, group=NOGROUP,
                               extra_groups=[], env=child_env(), cwd=public_dir, capture_output=True, text=True)
        problem = probe.stderr.strip()[-120:] if probe.returncode else None
    except PermissionError as exc:
        problem = str(exc)
    if problem:
        pytest.skip(f"nobody cannot run this interpreter ({sys.executable}): {problem}")
    directory = os.path.join(public_dir, "svc")  # under /tmp: anyone could have made such a directory
    os.mkdir(directory)
    os.chown(directory, NOBODY, NOGROUP)
    path = os.path.join(directory, "ctl.sock")
    control = f'[redis]\nurl = "{redis_url}"\n[control]\nsocket = "{path}"\n'
    unnamed, named = os.path.join(public_dir, "unnamed.toml"), os.path.join(public_dir, "named.toml")
    with open(unnamed, "w") as handle:
        handle.write(control + BODY)
    with open(named, "w") as handle:
        handle.write(control + 'user = "nobody"\n' + BODY)
    for config in (unnamed, named):
        os.chmod(config, 0o644)
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "horizond", "--config", unnamed], user=NOBODY, group=NOGROUP,
                                  extra_groups=[], env=child_env(), cwd=public_dir, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answered = wait_until(lambda: (r := cli("--config", named, "status")).returncode == 0 and r,
                              what="the daemon running as nobody to answer root")
        assert "alpha" in answered.stdout
        refused = cli("--config", unnamed, "pause")
        assert refused.returncode == ctl.EXIT_ERROR and "refusing to talk" in refused.stderr
        assert "running" in cli("--config", named, "status").stdout  # the refused pause never arrived
    finally:
        for child in psutil.Process(daemon.pid).children(recursive=True):
            child.kill()
        daemon.kill()
        daemon.wait(10)


# --- 17: no secrets in children's environments ----------------------------------------------


def test_job_code_and_the_notify_command_inherit_no_redis_secret(tmp_path):
    server = SecuredRedis(tmp_path, "--requirepass", SECRET)
    notified = tmp_path / "notify-env"
    script = tmp_path / "notify.sh"
    script.write_text(f"#!/bin/sh\ncat >/dev/null; env > {notified}.tmp; mv {notified}.tmp {notified}\n")
    script.chmod(0o755)
    body = f'[waits]\nqb = 1\n\n[notify]\ncommand = ["{script}"]\n\n{BODY}\n[supervisors.beta]\nqueues = ["qb"]\n'
    env = child_env(REDIS_PASSWORD=SECRET, REDIS_SENTINEL_PASSWORD=SENTINEL_SECRET, REDIS_URL=server.url)
    daemon = Daemon(tmp_path, server.url, body, env=env)
    try:
        daemon.wait_ready({"alpha": 1, "beta": 1})
        client = Redis.from_url(server.url, password=SECRET)
        Queue("qa", connection=client).enqueue(report_env, "job")
        wait_until(lambda: client.hget("test:env", "job"), what="the job to report its environment")
        assert client.hget("test:env", "job") == b"-"
        # the [notify] command: a job left waiting on a paused queue past its 1 s threshold
        assert cli("--socket", daemon.socket, "pause", "beta").returncode == 0
        Queue("qb", connection=client).enqueue("testjobs.record", "waits")
        wait_until(notified.exists, timeout=20, what="the notify command to run")
        seen = notified.read_text()
        assert "HORIZOND_QUEUE=qb" in seen
        assert SECRET not in seen and SENTINEL_SECRET not in seen and "REDIS_PASSWORD" not in seen
        # the master itself still has them: a reload reconnects with the password
        reloaded = cli("--socket", daemon.socket, "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        Queue("qa", connection=client).enqueue("testjobs.record", "after-reload")
        wait_until(lambda: client.hget("test:runs", "after-reload") == b"1", what="a job after the reload")
    finally:
        daemon.cleanup()
        server.stop()
