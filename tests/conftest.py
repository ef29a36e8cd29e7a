"""Shared fixtures: a private redis-server per test session, and a real horizond.

Nothing here talks to the Redis service on 6379: the suite starts its own
redis-server on a free loopback port and flushes it between tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from redis import Redis

from horizond.control.ctl import NotRunning, request

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll a condition the test cares about; fail with a message if it never holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None):
        if not shutil.which("redis-server"):
            pytest.exit("redis-server not found: install it with 'sudo apt-get install redis-server'", 2)
        self.port = port or free_port()
        self.workdir = workdir
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        wait_until(lambda: self.proc.poll() is None and _answers(self.port), what="redis-server to answer")

    def command(self) -> list[str]:
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _answers(port: int) -> bool:
    """Up and answering (a NOAUTH refusal counts: the server is there)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def redis(redis_url) -> Redis:
    return Redis.from_url(redis_url)


def child_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "HORIZOND_SOCKET", "HORIZOND_CONFIG", "NOTIFY_SOCKET")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    env.update(extra)
    return env


class Daemon:
    """A real horizond process on a config file written by the test."""

    def __init__(self, tmp_path: Path, redis_url: str, body: str, env: dict | None = None,
                 preload: tuple[str, ...] = (), socket_path: str | None = None, extra_control: str = "",
                 extra_master: str = "", redis_table: bool = True, wrap: tuple[str, ...] = ()):
        self.redis_table = redis_table
        self.preload = preload
        self.extra_master = extra_master
        self.extra_control = extra_control
        self.dir = tmp_path
        self.config = tmp_path / "horizond.toml"
        self.socket = socket_path or str(tmp_path / "ctl.sock")
        self.redis_url = redis_url
        self.log_path = tmp_path / "horizond.log"
        self.write_config(body)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "horizond", "--config", str(self.config), "--log-level", "debug"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env or child_env(), start_new_session=True,
        )
        self.seen_pids: set[int] = set()

    def write_config(self, body: str) -> None:
        redis = f'[redis]\nurl = "{self.redis_url}"\n' if self.redis_table else ""
        body = body if self.redis_table else body.replace("[redis]\n", f'[redis]\nurl = "{self.redis_url}"\n', 1)
        head = (f'{redis}[control]\nsocket = "{self.socket}"\n{self.extra_control}'
                f'[app]\npaths = ["{TESTS}"]\npreload = {list(self.preload)!r}\n'
                f'[master]\nshutdown_grace = 3\n{self.extra_master}')
        self.config.write_text(head + textwrap.dedent(body))

    def status(self) -> dict:
        response = request(self.socket, "status")
        assert response["ok"], response
        status = response["result"]
        for sup in status["supervisors"]:
            self.seen_pids.update(w["pid"] for w in sup["workers"])
        if status["scheduler"]["pid"]:
            self.seen_pids.add(status["scheduler"]["pid"])
        return status

    def try_status(self) -> dict | None:
        try:
            return self.status()
        except (NotRunning, OSError, ValueError):
            return None

    def supervisor(self, name: str) -> dict | None:
        status = self.try_status()
        return next((s for s in status["supervisors"] if s["name"] == name), None) if status else None

    def wait_ready(self, counts: dict[str, int], timeout: float = 15.0) -> dict:
        """Until each supervisor has that many workers registered and idle/busy."""
        def ready():
            status = self.try_status()
            if not status:
                return None
            by_name = {s["name"]: s for s in status["supervisors"] if s["state"] in ("running", "paused")}
            for name, n in counts.items():
                sup = by_name.get(name)
                if not sup or sum(1 for w in sup["workers"] if w["state"] in ("idle", "busy", "paused")) != n:
                    return None
            return status
        try:
            return wait_until(ready, timeout, what=f"workers {counts}")
        except AssertionError as exc:  # say what the daemon was doing: a bare timeout explains nothing
            status = self.try_status()
            seen = {s["name"]: [w["state"] for w in s["workers"]] for s in status["supervisors"]} if status else None
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise AssertionError(f"{exc}; workers now: {seen}; the daemon's last log lines:\n"
                                 + "\n".join(tail)) from None

    def worker_pids(self) -> set[int]:
        status = self.status()
        return {w["pid"] for s in status["supervisors"] for w in s["workers"]}

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for pid in self.seen_pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        self._log.close()


@pytest.fixture
def public_dir():
    """A directory other uids can traverse to reach a socket (pytest's own tmp dirs are private to root)."""
    path = tempfile.mkdtemp(prefix="horizond-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(tmp_path, redis_url):
    daemons: list[Daemon] = []

    def start(body: str, env: dict | None = None, **options) -> Daemon:
        running = [d for d in daemons if d.proc.poll() is None]  # a restart reuses the place of the one gone
        where = tmp_path if not running else tmp_path / f"daemon{len(daemons) + 1}"  # own config, socket, log
        where.mkdir(exist_ok=True)
        daemon = Daemon(where, redis_url, body, env, **options)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.cleanup()


def horizonctl(*args, socket_path: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real horizonctl as a user would (no terminal on stdin)."""
    where = ["--socket", socket_path] if socket_path else []
    return subprocess.run([sys.executable, "-m", "horizond.control.ctl", *where, *args], capture_output=True, text=True,
                          env=child_env(), cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def scrape(port, path="/metrics"):
    """(status, body) of an HTTP GET on the daemon's [metrics] listener (/metrics, /healthz)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text, name, **labels):
    """A Prometheus sample's value from an exposition text, by name and labels; None if absent."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None
