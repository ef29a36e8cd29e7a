"""ControlServer: the Unix socket horizonctl talks to, served from the master loop.

Non-blocking accept, reads and writes in the master's selector, one JSON request
and one JSON response per connection, size and time limits: a slow or hostile client
never blocks the loop. Peers are checked with SO_PEERCRED, and each uid other than
root and the daemon's own holds a few connections at most, so those two always get in.
A transport only: it works out the peer's access level ("full" or "read") and hands
the request to the command layer (`handler(request, access)`), which enforces it.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import selectors
import socket
import stat
import struct
from collections.abc import Callable

from horizond.control import sockdir
from horizond.control.loopserver import BACKLOG, LoopServer, ThrottledLog, send_now

log = logging.getLogger("horizond.control")

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 64
PER_UID = 8  # open connections of one uid other than root and the daemon's own
RESERVED = 16  # slots the other uids together leave free for root and the daemon's own user
MAX_REPLY = 2 * 1024 * 1024
MAX_DEPTH = 32  # nesting of a request's JSON: deeper is refused before anything reads it
SOCKET_MODE = 0o660
DIR_MODE = 0o750


class SocketError(Exception):
    """The control socket cannot be set up; the daemon refuses to start."""


class AlreadyRunning(SocketError):
    pass


class ControlServer(LoopServer):
    max_clients = MAX_CLIENTS
    client_timeout = CLIENT_TIMEOUT
    max_reply = MAX_REPLY

    def __init__(self, path: str, selector: selectors.BaseSelector, handler: Callable[[dict, str], dict],
                 group: str | None = None, readers: str | None = None):
        super().__init__(selector)
        self.path = path
        self.handler = handler
        self.group, self.readers = group, readers
        self._gids: tuple[int | None, int | None] = (None, None)
        self._inode: int | None = None
        self._log = ThrottledLog(log, logging.WARNING)  # per (what, uid): a flood costs a line every few seconds

    def open(self) -> None:
        self._gids = (_gid(self.group, "group"), _gid(self.readers, "readers"))
        # Readers outside the control group must be able to connect at all: then the
        # file is open to everyone and SO_PEERCRED alone decides (see README).
        sock_mode, dir_mode = (0o666, 0o755) if self.readers else (SOCKET_MODE, DIR_MODE)
        try:
            directory = os.path.dirname(self.path) or "."
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=dir_mode, exist_ok=True)
                if self._gids[0] is not None:
                    os.chown(directory, -1, self._gids[0])
            problem = sockdir.unsafe_directory(directory)
            if problem:
                raise SocketError(problem)
            self._remove_stale()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o777 & ~sock_mode)  # the file is born with its final mode
            try:
                sock.bind(self.path)
            finally:
                os.umask(old_umask)
            if self._gids[0] is not None:
                os.chown(self.path, -1, self._gids[0])  # narrows nothing: owner-only until then
        except OSError as exc:
            raise SocketError(f"cannot create the control socket {self.path}: {exc.strerror or exc} "
                              "(set [control] socket or $HORIZOND_SOCKET)") from None
        sock.listen(BACKLOG)
        self._inode = os.stat(self.path).st_ino
        self.listen(sock)

    def _remove_stale(self) -> None:
        """Replace a dead daemon's socket; refuse to steal a live one."""
        if not os.path.exists(self.path):
            return
        if not stat.S_ISSOCK(os.stat(self.path).st_mode):
            raise AlreadyRunning(f"{self.path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(self.path)
            return
        except OSError:
            pass
        else:
            raise AlreadyRunning(f"another horizond is already listening on {self.path}")
        finally:
            probe.close()

    def set_access(self, group: str | None, readers: str | None) -> None:
        """A reload may change who is let in; it takes effect for the next connection."""
        self._gids = (_gid(group, "group"), _gid(readers, "readers"))
        self.group, self.readers = group, readers

    def close(self) -> None:
        listening = self.sock is not None
        super().close()
        if listening:
            try:
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                    os.unlink(self.path)
            except FileNotFoundError:
                pass

    def busy_reply(self) -> bytes:
        return _encode(_error("busy: too many open control connections"))

    def admit(self, conn: socket.socket) -> dict | None:
        peer = _peer(conn)
        trusted = _privileged(peer) or self._gids == (None, None)
        groups = set() if trusted else _groups_of(peer)
        peer["access"] = access_level(peer["peer_uid"], groups, os.getuid(), *self._gids)
        if peer["access"] is None:
            self._log(("refused", peer["peer_uid"]), "control connection refused",
                      {"event": "control_refused", **peer})
            send_now(conn, _encode({"v": PROTOCOL_VERSION, "ok": False, "error": "permission denied"}))
            return None
        return peer

    def refusal(self, peer: dict, clients: list[dict]) -> bytes | None:
        """Root and the daemon's own user always find a slot: any other uid holds at most PER_UID
        connections, and all of those together leave RESERVED slots free."""
        if _privileged(peer):
            return None
        others = [c for c in clients if not _privileged(c)]
        if sum(1 for c in others if c["peer_uid"] == peer["peer_uid"]) >= PER_UID:
            error = f"busy: uid {peer['peer_uid']} already holds {PER_UID} open control connections (the limit)"
        elif len(others) >= MAX_CLIENTS - RESERVED:
            error = "busy: too many open control connections"
        else:
            return None
        self._log(("busy", peer["peer_uid"]), "control connection refused: " + error,
                  {"event": "control_busy", **peer})
        return _encode(_error(error))

    def housekeeping(self, now: float, closing: bool = False) -> None:
        self._log.flush(now, force=closing)

    def reply(self, request: bytes, peer: dict, ended: bool) -> bytes | None:
        line, newline, _ = request.partition(b"\n")
        if len(line) > MAX_REQUEST:
            return _encode(_error("request too large (limit 64 KiB)"))
        if newline:
            return _encode(self._dispatch(line, peer))
        return b"" if ended else None  # hung up without a request, or more to come

    def failed_reply(self, request: bytes, peer: dict, exc: Exception) -> bytes:
        return _encode(self._failed(_command_name(request), peer, exc))

    def too_large(self, size: int, peer: dict) -> bytes:
        return _encode(_error(f"reply too large ({size} bytes, the limit is {MAX_REPLY}): ask for less "
                              "(--limit, --queue)"))

    def _failed(self, cmd: str | None, peer: dict, exc: Exception) -> dict:
        """An exception while answering: logged with the command's name, an error to the client."""
        self._log(("error", peer["peer_uid"]), f"control command {cmd!r} failed",
                  {"event": "control_error", "cmd": cmd, **peer}, exc_info=exc)
        return _error(f"internal error in {cmd!r}: {type(exc).__name__}: {str(exc)[:200]}")

    def _dispatch(self, line: bytes, peer: dict) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return _error("malformed request: not JSON")
        except RecursionError:
            request = None
        if request is None or not _shallow(request):
            return _error(f"malformed request: nested deeper than {MAX_DEPTH} levels")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return _error("malformed request: expected an object with a 'cmd' string")
        if request.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            return _error(f"unsupported protocol version {request.get('v')!r}; this daemon speaks {PROTOCOL_VERSION}")
        try:
            result = self.handler(request, peer["access"])
        except Exception as exc:
            return self._failed(request["cmd"][:64], peer, exc)
        return {"v": PROTOCOL_VERSION, **result}


def _error(message: str) -> dict:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message}


def _encode(response: dict) -> bytes:
    return json.dumps(response, default=str).encode() + b"\n"


def _shallow(value: object) -> bool:
    """No deeper than MAX_DEPTH (walked without recursion: depth is what is being checked)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return False
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def _command_name(request: bytes) -> str | None:
    """The 'cmd' of a request that may not even parse, for the log."""
    found = re.search(rb'"cmd"\s*:\s*"([^"\\]{1,64})"', request[:MAX_REQUEST])
    return found.group(1).decode(errors="replace") if found else None


def _privileged(peer: dict) -> bool:
    return peer["peer_uid"] in (0, os.getuid())


def _peer(conn: socket.socket) -> dict:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return {"peer_pid": pid, "peer_uid": uid, "peer_gid": gid}


def access_level(uid: int, groups: set[int], own_uid: int, group_gid: int | None,
                 readers_gid: int | None) -> str | None:
    """"full", "read" or None (refused) for a peer with these uid and groups."""
    if uid in (0, own_uid) or (group_gid is not None and group_gid in groups):
        return "full"
    if readers_gid is not None and readers_gid in groups:
        return "read"
    return None


def _groups_of(peer: dict) -> set[int]:
    """Primary and supplementary groups of the peer: SO_PEERCRED has only the primary."""
    groups = {peer["peer_gid"]}
    try:
        with open(f"/proc/{peer['peer_pid']}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except OSError:
        pass
    try:  # membership by name, as /etc/group lists it
        name = pwd.getpwuid(peer["peer_uid"]).pw_name
        groups.update(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)
    except KeyError:
        pass
    return groups


def _gid(name: str | None, key: str) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SocketError(f"[control] {key}: no such group {name!r}") from None
