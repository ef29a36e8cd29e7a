"""The command layer on its own: a real (not running) master behind it, no socket needed,
and the same answers through the transports that sit on top of it."""

from __future__ import annotations

import grp
import json
import os
import pwd
import selectors
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from conftest import free_port
from horizond.control.commands import READ_ONLY, CommandLayer
from horizond.core.config import parse
from horizond.supervise.master import Master

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid


def _master(redis_url: str, socket_path: str, extra: str = "") -> Master:
    config = parse(f'[redis]\nurl = "{redis_url}"\n[control]\nsocket = "{socket_path}"\nreaders = "nogroup"\n'
                   f'{extra}[supervisors.alpha]\nqueues = ["qa"]\n[supervisors.beta]\nqueues = ["qb"]\n', "test.toml")
    master = Master(config, load_config=lambda: config)
    for sup in config.supervisors:
        master.add_supervisor(sup, paused=False)  # no tick: nothing is forked
    return master


@pytest.fixture
def master(redis_url, public_dir):
    made = _master(redis_url, os.path.join(public_dir, "ctl.sock"))
    yield made
    made.selector.close()


@contextmanager
def serving(selector: selectors.BaseSelector):
    """The master loop's part that answers sockets, in a thread, for as long as the test talks."""
    done = threading.Event()

    def loop():
        while not done.is_set():
            for key, _ in selector.select(0.05):
                key.data()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)


def _ask_as_nobody(path: str, request: dict) -> dict:
    """One request over the Unix socket from a forked child that gave up root (a reader)."""
    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(NOGROUP)
                os.setuid(NOBODY)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(5)
                    sock.connect(path)
                    sock.sendall(json.dumps(request).encode() + b"\n")
                    reply = b""
                    while chunk := sock.recv(65536):
                        reply += chunk
                os.write(out.fileno(), reply)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        out.seek(0)
        return json.loads(out.read())


def test_every_write_command_is_refused_to_a_reader_by_the_layer_itself(master):
    layer = CommandLayer(master)
    writes = sorted(set(layer._table) - READ_ONLY)
    assert {"pause", "continue", "scale", "restart", "reload", "terminate", "retry", "flush"} <= set(writes)
    for name in writes:
        reply = layer.handle({"cmd": name, "args": {}}, "read")
        assert reply == {"ok": False, "error": f"permission denied: {name!r} needs full access (read-only client)"}
    assert not any(s.paused for s in master.supervisors.values()) and not master.stopping


def test_a_reader_is_refused_identically_by_the_layer_and_through_the_socket(master):
    master.control.open()
    try:
        with serving(master.selector):
            for request in ({"cmd": "pause"}, {"cmd": "scale", "args": {"supervisor": "alpha", "processes": 3}},
                            {"cmd": "failed_show", "args": {"job_id": "x"}}):
                through_socket = _ask_as_nobody(master.config.socket_path, request)
                assert through_socket.pop("v") == 1
                assert through_socket == master._commands.handle(request, "read")
                assert "permission denied" in through_socket["error"]
            status = _ask_as_nobody(master.config.socket_path, {"cmd": "supervisors"})
    finally:
        master.control.close()
    assert status["ok"] and [s["name"] for s in status["result"]] == ["alpha", "beta"]
    assert not any(s.paused for s in master.supervisors.values()) and master.supervisors["alpha"].pinned is None


def test_full_access_acts_through_the_daemon_interface(master):
    layer = CommandLayer(master)
    assert layer.handle({"cmd": "pause", "args": {"supervisor": "alpha"}}, "full") == \
        {"ok": True, "result": {"paused": ["alpha"]}}
    assert master.supervisors["alpha"].paused and not master.supervisors["beta"].paused
    scaled = layer.handle({"cmd": "scale", "args": {"supervisor": "beta", "processes": 2}}, "full")
    assert scaled == {"ok": True, "result": {"supervisor": "beta", "pinned": 2, "target": 2}}
    assert layer.handle({"cmd": "scale", "args": {"supervisor": "beta", "processes": "auto"}}, "full")["result"][
        "pinned"] is None
    assert layer.handle({"cmd": "scale", "args": {"supervisor": "gamma", "processes": 1}}, "full") == \
        {"ok": False, "error": "unknown supervisor 'gamma' (running: alpha, beta)"}
    assert layer.handle({"cmd": "nope"}, "full")["error"].startswith("unknown command 'nope'; known: ")
    assert layer.handle({"args": {}}, "full") == \
        {"ok": False, "error": "malformed request: expected an object with a 'cmd' string"}


def test_metrics_is_a_read_command_with_plain_json(master):
    reply = master._commands.handle({"cmd": "metrics"}, "read")
    assert reply["ok"]
    assert json.loads(json.dumps(reply["result"])) == reply["result"]  # any transport can carry it as it is
    assert set(reply["result"]) >= {"queues", "pending", "workers", "memory", "long_waits", "rate_limits"}


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("redis_up", [True, False])
def test_healthz_gives_the_verdict_of_the_health_command(redis_url, public_dir, redis_up):
    port = free_port()
    url = redis_url if redis_up else f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    master = _master(url, os.path.join(public_dir, "ctl.sock"), f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    master.exporter.open()
    try:
        with serving(master.selector):
            status, body = _healthz(port)
            scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        master.exporter.close()
        master.selector.close()
    verdict = master._commands.handle({"cmd": "health"}, "read")["result"]
    assert body == verdict
    assert (status, body["status"]) == ((200, body["status"]) if redis_up else (503, "red"))
    assert body["status"] != "red" if redis_up else body["status"] == "red"
    assert "horizon_queue_size" in scraped or "horizon_worker_count" in scraped


def test_the_master_and_its_parts_fit_the_daemon_interface(master):
    from horizond.control.daemon import Daemon, PoolState, SlotState, SupervisorState

    assert isinstance(master, Daemon)
    sup = master.supervisors["alpha"]
    assert isinstance(sup, SupervisorState) and isinstance(master.scheduler, SlotState)
    assert all(isinstance(pool, PoolState) for pool in sup.pools.values())
