"""The dashboard's users: `horizonctl web-user add|remove|list` and the users_file they write.

One line per user, `NAME:ROLE:scrypt$N$r$p$SALT$HASH` (base64), like an htpasswd
file: readable by eye, editable by hand, no secret in it but slow hashes. scrypt
(hashlib, OpenSSL) with N=2**15 costs ~50 ms and 32 MiB per try, so a stolen
file is expensive to attack and a login is still quick. The file is written to a
temporary file of mode 0600 and renamed over the old one, so a reader (the
dashboard re-reads it when its mtime changes) never sees half a file.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import secrets
import sys
from dataclasses import dataclass

ROLES = ("admin", "viewer")
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
N, R, P = 2**15, 8, 1
MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 8


class UsersError(Exception):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()
    return f"scrypt${N}${R}${P}${b64(salt)}${b64(digest)}"


def verify(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; a malformed hash never matches."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=MAXMEM, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load(path: str) -> dict[str, User]:
    """The users in `path` (none when it does not exist yet); a malformed line is skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return {}
    users = {}
    for line in lines:
        name, _, rest = line.strip().partition(":")
        role, _, digest = rest.partition(":")
        if NAME.fullmatch(name) and role in ROLES and digest.startswith("scrypt$"):
            users[name] = User(name, role, digest)
    return users


def save(path: str, users: dict[str, User]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(f"{u.name}:{u.role}:{u.hash}\n" for u in sorted(users.values(), key=lambda u: u.name))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_password(stdin=None) -> str:
    """From the terminal (asked twice), or the first line of stdin when it is not a terminal."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise UsersError("the passwords differ; nothing changed")
        password = first
    else:
        password = stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise UsersError(f"a password needs at least {MIN_PASSWORD} characters; nothing changed")
    return password


def add(path: str, name: str, role: str, password: str) -> bool:
    """Add or replace a user; True when it replaced one."""
    if not NAME.fullmatch(name):
        raise UsersError(f"bad user name {name!r}: letters, digits, '_', '.', '@', '-', at most 64")
    if role not in ROLES:
        raise UsersError(f"bad role {role!r}: expected one of {', '.join(ROLES)}")
    users = load(path)
    existed = name in users
    users[name] = User(name, role, hash_password(password))
    save(path, users)
    return existed


def remove(path: str, name: str) -> None:
    users = load(path)
    if name not in users:
        raise UsersError(f"no user {name!r} in {path}")
    del users[name]
    save(path, users)


def add_parser(sub, run) -> None:
    """`web-user` under horizonctl's subcommands; it works on the file, no daemon is asked."""
    p = sub.add_parser("web-user", help="dashboard users: add NAME --role admin|viewer, remove NAME, list")
    p.set_defaults(func=run, local=True)
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=ROLES, default="viewer")
    p.add_argument("--users-file", metavar="PATH", help="default: [web] users_file of the config")


def command(args, users_file: str | None) -> int:
    path = args.users_file or users_file
    if not path:
        raise UsersError("no users file: set [web] users_file in the config, or pass --users-file")
    if args.action == "list":
        for user in sorted(load(path).values(), key=lambda u: u.name):
            print(f"{user.name}\t{user.role}")
        return 0
    if not args.name:
        raise UsersError(f"web-user {args.action} needs a NAME")
    if args.action == "remove":
        remove(path, args.name)
        print(f"removed {args.name} from {path}")
        return 0
    replaced = add(path, args.name, args.role, read_password())
    print(f"{'replaced' if replaced else 'added'} {args.name} ({args.role}) in {path}")
    return 0
