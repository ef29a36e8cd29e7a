"""The control socket: who may talk to it, and what garbage does to it (nothing)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import select
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import wait_until

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="switching to other uids needs root")

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
DAEMON_GID = grp.getgrnam("daemon").gr_gid
USERS_GID = grp.getgrnam("users").gr_gid


def forked_as(action, gid: int, groups: list[int]):
    """Run `action()` in a real child process as `nobody`; returns a call that waits for its (JSON) result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps(action()).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps({"crashed": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            os._exit(0)
    os.close(write_end)

    def result(timeout: float = 30.0):
        ready, _, _ = select.select([read_end], [], [], timeout)
        assert ready, "the attacking process did not finish"
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        return json.loads(data)
    return result


def as_other_user(path: str, payload: bytes, gid: int, groups: list[int]) -> dict | str:
    """Connect from a real forked process running as `nobody`; return the answer (or the error)."""
    def talk():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            try:
                sock.sendall(payload)
            except OSError:  # refused peers may be hung up on before they finish writing
                pass
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data) if data else "closed"
    answer = forked_as(talk, gid, groups)()
    return answer["crashed"] if isinstance(answer, dict) and "crashed" in answer else answer


STATUS = b'{"v": 1, "cmd": "status"}\n'
PAUSE = b'{"v": 1, "cmd": "pause"}\n'




def start(start_daemon, public, extra_control=""):
    daemon = start_daemon('[supervisors.alpha]\nqueues = ["qa"]\n',
                          socket_path=os.path.join(public, "ctl.sock"), extra_control=extra_control)
    daemon.wait_ready({"alpha": 1})
    return daemon


@needs_root
def test_another_uid_is_refused_even_with_the_socket_opened_up_and_is_logged(start_daemon, public_dir):
    daemon = start(start_daemon, public_dir)
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == "0o660"  # born with its final mode
    os.chmod(daemon.socket, 0o777)  # the mistake
    answer = as_other_user(daemon.socket, STATUS, NOGROUP, [])
    assert answer["ok"] is False and answer["error"] == "permission denied"
    refused = wait_until(lambda: [e for e in daemon.log_events() if e.get("event") == "control_refused"],
                         what="the refusal to be logged")
    assert refused[0]["peer_uid"] == NOBODY
    assert daemon.status()["state"] == "running"


@needs_root
def test_readers_get_status_only_and_the_group_gets_control_through_supplementary_groups(start_daemon, public_dir):
    daemon = start(start_daemon, public_dir, extra_control='group = "daemon"\nreaders = "nogroup"\n')
    reader = as_other_user(daemon.socket, STATUS, NOGROUP, [])
    assert reader["ok"] is True and reader["result"]["state"] == "running"
    denied = as_other_user(daemon.socket, PAUSE, NOGROUP, [])
    assert denied["ok"] is False and "needs full access" in denied["error"]
    assert daemon.status()["state"] == "running"
    # `daemon` only as a supplementary group (primary stays nogroup): full control
    admin = as_other_user(daemon.socket, PAUSE, USERS_GID, [DAEMON_GID])
    assert admin["ok"] is True
    assert daemon.status()["state"] == "paused"
    stranger = as_other_user(daemon.socket, STATUS, USERS_GID, [])
    assert stranger["ok"] is False and stranger["error"] == "permission denied"


@pytest.fixture
def fuzz_daemon(start_daemon):
    daemon = start_daemon('[supervisors.alpha]\nqueues = ["qa"]\n')
    daemon.wait_ready({"alpha": 1})
    return daemon


def _exchange(path: str, payload: bytes, close_early: bool) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(payload)
        if close_early:
            return b""
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=300).map(lambda t: t.encode() + b"\n"),
    st.builds(lambda obj: json.dumps(obj).encode() + b"\n",
              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4))),
    st.sampled_from([b'{"cmd": "status"', b'{"v": 1, "cmd": "scale", "args": {"supervisor": "alpha"}}\n',
                     b'{"v": 1, "cmd": "scale", "args": {"supervisor": "alpha", "processes": true}}\n',
                     b'{"v": 1, "cmd": 7}\n', b'[1, 2]\n', b'\xff\xfe\n', b"x" * 70000]),
), close_early=st.booleans())
def test_garbage_never_changes_or_stops_the_daemon(fuzz_daemon, payload, close_early):
    answer = _exchange(fuzz_daemon.socket, payload, close_early)
    if answer:
        response = json.loads(answer)
        assert response["v"] == 1 and response["ok"] is False and response["error"]
    status = fuzz_daemon.status()
    assert status["state"] == "running"
    assert [(s["name"], s["target"]) for s in status["supervisors"]] == [("alpha", 1)]
