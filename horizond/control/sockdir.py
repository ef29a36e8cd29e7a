"""Who could have put a socket at a path: both ends' guard against a swapped control socket.

Whoever may write the socket's directory (or rename it, through a directory above) can replace
the daemon's socket with their own and capture what root sends to it. So the daemon refuses a
directory another non-root user controls, and horizonctl, before it sends anything, checks who
serves the socket it reached (SO_PEERCRED).
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct


def ancestors(path: str) -> list[str]:
    """`path` and every directory above it, up to /."""
    out = [path]
    while (parent := os.path.dirname(path)) != path:
        out.append(parent)
        path = parent
    return out


def user_name(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def unsafe_directory(directory: str) -> str | None:
    """Why the daemon must not put its socket in `directory`, or None.

    The directory itself must be owned by root or us and writable by nobody else; the ones above
    likewise, except sticky ones such as /tmp, where nobody may move what is not theirs.
    Raises OSError when a directory cannot be examined.
    """
    own = os.getuid()
    literal = os.path.abspath(directory)
    itself = {literal, os.path.realpath(literal)}
    for path in sorted(set(ancestors(literal)) | set(ancestors(os.path.realpath(literal)))):
        info = os.stat(path)
        if info.st_uid not in (0, own):
            return (f"refusing the control socket directory {directory}: {path} belongs to {user_name(info.st_uid)}, "
                    "who could replace the socket; use a directory owned by root or by the daemon's user")
        if info.st_mode & 0o022 and (path in itself or not info.st_mode & stat.S_ISVTX):
            whom = "everyone" if info.st_mode & 0o002 else "its group"
            return (f"refusing the control socket directory {directory}: {path} is writable by {whom} "
                    f"(mode {stat.S_IMODE(info.st_mode):o}), who could replace the socket")
    return None


def delegated_owner(path: str) -> int | None:
    """The owner of the socket's directory when only root could have given it to them: the
    directory is theirs alone and every directory above it is root's alone (systemd's
    RuntimeDirectory= /run/horizond under User=, say). Under a public directory such as /tmp
    anyone may have made it: None."""
    directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    try:
        info = os.stat(directory)
        if info.st_mode & 0o022:
            return None
        for above in ancestors(directory)[1:]:
            above_info = os.stat(above)
            if above_info.st_uid != 0 or above_info.st_mode & 0o022:
                return None
    except OSError:
        return None
    return info.st_uid


def daemon_uid(daemon_user: str | None) -> int | None:
    """[control] user as a uid; None when unset or unknown here (then no process runs as it)."""
    if daemon_user is None:
        return None
    if daemon_user.isdigit():
        return int(daemon_user)
    try:
        return pwd.getpwnam(daemon_user).pw_uid
    except KeyError:
        return None


def untrusted_server(sock: socket.socket, path: str, daemon_user: str | None) -> str | None:
    """Why horizonctl must send nothing on this connected socket, or None: it is served by
    neither root, nor us, nor [control] user, nor the user root gave the socket's directory."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", raw)
    if uid in (0, os.geteuid(), daemon_uid(daemon_user), delegated_owner(path)):
        return None
    named = "no [control] user is set" if daemon_user is None else (
        f"[control] user is {daemon_user!r}" + ("" if daemon_uid(daemon_user) is not None else " (no such user)"))
    return (f"refusing to talk to {path}: it is served by {user_name(uid)}, who is neither root nor you, {named}, "
            "and its directory is not one only root could have given them; another user may have replaced "
            "the socket (if that is the daemon's user, name it in [control] user)")
