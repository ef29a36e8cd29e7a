"""Redis away: at start-up (refused, or hung by SIGSTOP) and under a burst of health probes.

Each test runs its own redis-server (or none yet on a chosen port), so stopping it disturbs
no other test; systemd's $NOTIFY_SOCKET is a real datagram socket (test_systemd.Listener).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from redis import Redis
from rq import Queue
from test_systemd import Listener

from conftest import Daemon, RedisServer, child_env, free_port, horizonctl, wait_until
from horizond.control.ctl import request

BODY = """
[supervisors.alpha]
queues = ["qa"]
min_processes = 2
"""


@pytest.fixture
def notify(tmp_path):
    listener = Listener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def _worker_backoff(daemon: Daemon) -> float:
    """The longest retry delay a waiting worker has announced."""
    return max((e.get("retry_in", 0) for e in daemon.log_events()
                if e.get("event") == "redis_unreachable" and "supervisor" in e), default=0)


def test_redis_down_at_start_ready_at_once_and_jobs_flow_as_soon_as_it_is_up(tmp_path, notify):
    port = free_port()  # nothing listens there yet: connections are refused
    started = time.monotonic()
    daemon = Daemon(tmp_path, f"redis://127.0.0.1:{port}/0", BODY, env=child_env(NOTIFY_SOCKET=notify.path))
    server = None
    try:
        # systemd's Type=notify start must not wait for Redis: READY once the workers are started
        notify.next(lambda d: d == b"READY=1", timeout=5)
        assert time.monotonic() - started < 5
        notify.next(lambda d: d.startswith(b"STATUS=") and b"REDIS UNREACHABLE" in d, timeout=2)
        shown = horizonctl("status", socket_path=daemon.socket, timeout=10)
        assert shown.returncode == 0 and "UNREACHABLE" in shown.stdout, shown
        status = daemon.status()
        assert not status["redis"]["ok"] and len(status["supervisors"][0]["workers"]) == 2
        scheduler = status["scheduler"]["pid"]
        # an outage long enough that the workers' own back-off has grown to 4 s
        wait_until(lambda: _worker_backoff(daemon) >= 4, timeout=15, what="the workers to back off to 4 s")

        server = RedisServer(tmp_path, port=port)
        up = time.monotonic()
        client = Redis.from_url(server.url)
        Queue("qa", connection=client).enqueue("testjobs.record", "first")
        wait_until(lambda: client.hget("test:runs", "first") == b"1", timeout=15, what="the first job")
        took = time.monotonic() - up
        assert took < 2.0, f"first job ran {took:.1f} s after Redis came up"
        print(f"first job {took:.2f} s after Redis answered")
        daemon.wait_ready({"alpha": 2}, timeout=5)
        status = wait_until(lambda: (s := daemon.status())["redis"]["ok"] and s, timeout=5, what="redis ok")
        # the scheduler waited for Redis too, instead of crash-looping into back-off
        assert status["scheduler"] == {"pid": scheduler, "failures": 0}
        assert [d for _, d in notify.seen].count(b"READY=1") == 1
    finally:
        daemon.cleanup()
        if server:
            server.stop()


def test_a_hung_redis_at_start_neither_kills_nor_holds_the_master(tmp_path, notify):
    server = RedisServer(tmp_path)
    server.proc.send_signal(signal.SIGSTOP)  # connections are accepted, never answered
    daemon = Daemon(tmp_path, server.url, BODY, env=child_env(NOTIFY_SOCKET=notify.path))
    try:
        notify.next(lambda d: d == b"READY=1", timeout=8)
        assert daemon.proc.poll() is None
        asked = time.monotonic()
        status = request(daemon.socket, "status", timeout=10)["result"]
        assert time.monotonic() - asked < 1.0 and not status["redis"]["ok"]
        server.proc.send_signal(signal.SIGCONT)
        client = Redis.from_url(server.url)
        Queue("qa", connection=client).enqueue("testjobs.record", "after-hang")
        wait_until(lambda: client.hget("test:runs", "after-hang") == b"1", timeout=15, what="jobs to flow")
        wait_until(lambda: daemon.status()["redis"]["ok"], timeout=10, what="status to show Redis back")
    finally:
        server.proc.send_signal(signal.SIGCONT)
        daemon.cleanup()
        server.stop()


def _probe_health(socket_path: str, metrics_port: int, stop: threading.Event, seen: list) -> None:
    """One health client (horizonctl's request, then /healthz), recording (kind, seconds, verdict)."""
    while not stop.is_set():
        asked = time.monotonic()
        try:
            verdict = request(socket_path, "health", timeout=20)["result"]
        except Exception as exc:
            verdict = {"error": repr(exc)}
        seen.append(("health", time.monotonic() - asked, verdict))
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=20) as reply:
                verdict = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            verdict = json.loads(exc.read())
        except Exception as exc:
            verdict = {"error": repr(exc)}
        seen.append(("healthz", time.monotonic() - asked, verdict))


def _ask_failed(socket_path: str, stop: threading.Event, seen: list) -> None:
    """A client listing failed jobs meanwhile: a command that needs Redis, recording the replies."""
    while not stop.is_set():
        asked = time.monotonic()
        reply = request(socket_path, "failed", timeout=20)
        seen.append(("failed", time.monotonic() - asked, reply))


def test_health_probes_while_redis_hangs_answer_from_the_known_state_and_never_stall_status(tmp_path):
    server = RedisServer(tmp_path)
    metrics_port = free_port()
    daemon = Daemon(tmp_path, server.url, BODY + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    stop, seen, probes = threading.Event(), [], []
    try:
        daemon.wait_ready({"alpha": 2})
        assert request(daemon.socket, "health")["result"]["status"] == "green"
        server.proc.send_signal(signal.SIGSTOP)
        probes = [threading.Thread(target=_probe_health, args=(daemon.socket, metrics_port, stop, seen))
                  for _ in range(6)]
        probes.append(threading.Thread(target=_ask_failed, args=(daemon.socket, stop, seen)))
        for probe in probes:
            probe.start()
        worst_status, until = 0.0, time.monotonic() + 6
        while time.monotonic() < until:
            asked = time.monotonic()
            request(daemon.socket, "status", timeout=20)
            worst_status = max(worst_status, time.monotonic() - asked)
        stop.set()
        for probe in probes:
            probe.join(30)
        # at most one Redis timeout (0.75 s) holds the loop: the one that finds Redis away
        worst_health = max(took for _, took, _ in seen)
        assert worst_health < 1.0 and worst_status < 1.0, (worst_health, worst_status)
        print(f"worst health {worst_health:.2f} s, worst status {worst_status:.2f} s, {len(seen)} probes")
        verdicts = [v for kind, _, v in seen if kind != "failed"]
        assert len(verdicts) > 50, len(verdicts)
        details = {next(i["detail"] for i in v["indicators"] if i["name"] == "redis")[:12]
                   for v in verdicts if "indicators" in v}
        assert {v.get("status") for v in verdicts} == {"red"} and details == {"unreachable:"}, verdicts[:3]
        refusals = [r for kind, _, r in seen if kind == "failed"]
        assert refusals and all(not r["ok"] and "Redis unreachable" in r["error"] for r in refusals), refusals[:3]
        server.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: request(daemon.socket, "health")["result"]["status"] == "green", timeout=10,
                   what="health green again once Redis answers")
    finally:
        stop.set()
        for probe in probes:
            probe.join(30)
        server.proc.send_signal(signal.SIGCONT)
        daemon.cleanup()
        server.stop()
