"""horizonctl's client: find the control socket, send one request, read the reply.

Shared by the command modules (ctlshow.py: what is, ctlact.py: what changes) and ctl.py.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from horizond.configfile import load_control
from horizond.control import sockdir
from horizond.core.config import ConfigError

EXIT_RUNNING, EXIT_PAUSED, EXIT_NOT_RUNNING = 0, 1, 2
EXIT_ERROR = 3
SERVICE_SOCKET = "/run/horizond/horizond.sock"


class NotRunning(Exception):
    pass


class Failed(Exception):
    pass


class Endpoint(str):
    """A socket path, and the one uid besides root and our own that may serve it ([control] user)."""

    daemon_user: str | None = None

    def __new__(cls, path: str, daemon_user: str | None = None):
        endpoint = super().__new__(cls, path)
        endpoint.daemon_user = daemon_user
        return endpoint


def find_socket(args) -> Endpoint:
    """--socket, else --config's socket, else $HORIZOND_SOCKET, else the default config's.

    Only in the last case is the service's socket tried as well (an operator's
    default path differs from the service's); a named config is never second-guessed.
    Only [control] is read: no secret of the daemon's is needed to talk to it.
    """
    environ = dict(os.environ)
    if args.config:
        environ.pop("HORIZOND_SOCKET", None)
    try:
        control = load_control(args.config, environ)
    except (ConfigError, OSError) as exc:
        if args.socket or (environ.get("HORIZOND_SOCKET") and not args.config):
            control = {"socket_path": None, "control_user": None}  # the file is not needed to find it
        else:
            raise Failed(f"cannot find the control socket: {exc}") from None
    user = control["control_user"]
    if args.socket:
        return Endpoint(args.socket, user)
    if not args.config and environ.get("HORIZOND_SOCKET"):
        return Endpoint(environ["HORIZOND_SOCKET"], user)
    configured = control["socket_path"]
    if args.config or os.environ.get("HORIZOND_CONFIG") or os.path.exists(configured):
        return Endpoint(configured, user)
    return Endpoint(SERVICE_SOCKET if os.path.exists(SERVICE_SOCKET) else configured, user)


def request(path: str, cmd: str, timeout: float = 30.0, **args) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect(sock, path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NotRunning(f"horizond is not running (no daemon on {path}: {exc.strerror})") from None
    except PermissionError:
        sock.close()
        raise Failed(f"permission denied on {path}") from None
    with sock:
        problem = sockdir.untrusted_server(sock, path, getattr(path, "daemon_user", None))
        if problem:
            raise Failed(problem)
        try:
            sock.sendall(json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        except OSError:
            pass  # a refused client is hung up on at once: its answer is still there to read
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(f"horizond closed the connection on {path} without answering")
    if not data.endswith(b"\n"):  # a reply comes in pieces: this one stopped short
        raise Failed(f"horizond closed the connection on {path} after {len(data)} bytes of its reply")
    return json.loads(data)


def _connect(sock: socket.socket, path: str) -> None:
    """Wait in the kernel's queue while the daemon's backlog is full (a flood of other clients):
    a non-blocking connect would be refused with EAGAIN, and polling loses the race to the flood."""
    timeout = sock.gettimeout()
    sock.settimeout(None)
    wait = 0.0 if timeout is None else max(timeout, 0.001)  # 0.0: no limit, like settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(wait), int(wait % 1 * 1e6)))
    try:
        sock.connect(path)
    except BlockingIOError:
        raise Failed(f"horizond on {path} accepted no connection in {timeout:g} s (its backlog stayed full)") from None
    finally:
        sock.settimeout(timeout)


def call(path: str, cmd: str, **args):
    response = request(path, cmd, **args)
    if not response.get("ok"):
        raise Failed(response.get("error", "unknown error"))
    return response["result"]
