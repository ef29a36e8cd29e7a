"""Run a command under the system-call restrictions of a systemd unit, without systemd.

    /usr/bin/python3 tests/sandbox.py UNIT -- COMMAND...

Reads SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute= from UNIT, resolves the @groups with `systemd-analyze
syscall-filter` (the same tables systemd uses), loads the equivalent seccomp
filters with libseccomp (Debian's python3-seccomp), then execs COMMAND, which
inherits them, as do all its children. Like systemd it loads one filter per
setting; the kernel applies the strictest verdict of all. The caller must have
set no_new_privs (setpriv --no-new-privs), as systemd does for the service.

It runs with Debian's python3 because python3-seccomp is a system package; the
command may be any program (the test's venv python).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys

import seccomp

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def unit_settings(path: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in open(path):
        match = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
        if match:
            settings.setdefault(match[1], []).append(match[2].strip())
    return settings


def syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                         check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(groups[name], groups) if name.startswith("@") else {name}
    return found


def allowed_syscalls(filters: list[str], groups: dict[str, list[str]]) -> set[str] | None:
    """The allow list systemd builds from the unit's SystemCallFilter= lines, in order."""
    allowed: set[str] | None = None
    for value in filters:
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if allowed is None:
            if deny:
                raise SystemExit("sandbox.py: a deny-list-first SystemCallFilter= is not supported")
            allowed = expand(["@default"], groups) | names  # systemd adds @default to an allow list
        elif deny:
            allowed -= names
        else:
            allowed |= names
    return allowed


def errno_of(settings: dict[str, list[str]]) -> int | None:
    name = (settings.get("SystemCallErrorNumber") or [""])[-1]
    return getattr(errno, name) if name else None


def load_syscall_filter(allowed: set[str], err: int | None) -> None:
    refuse = seccomp.ERRNO(err) if err is not None else seccomp.KILL_PROCESS
    flt = seccomp.SyscallFilter(defaction=refuse)
    for name in sorted(allowed):
        try:
            flt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):  # not a system call on this architecture
            pass
    flt.load()


def load_address_families(families: list[str]) -> None:
    """Like systemd: socket() with a family outside the list fails with EAFNOSUPPORT."""
    allowed = sorted(getattr(socket, name) for name in families)
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
    flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.LT, allowed[0]))
    flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.GT, allowed[-1]))
    for family in range(allowed[0] + 1, allowed[-1]):
        if family not in allowed:
            flt.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.EQ, family))
    flt.load()


def load_memory_deny_write_execute() -> None:
    """Like systemd: no mapping both writable and executable, no making one executable later."""
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    both = PROT_WRITE | PROT_EXEC
    flt.add_rule(refuse, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, both))
    flt.add_rule(refuse, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    flt.add_rule(refuse, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, PROT_EXEC))
    flt.add_rule(refuse, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    flt.load()


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: sandbox.py UNIT -- COMMAND...")
    settings = unit_settings(argv[0])
    # the last filter loaded runs first; any refusal wins, so the order does not matter
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        load_memory_deny_write_execute()
    if settings.get("RestrictAddressFamilies"):
        load_address_families(settings["RestrictAddressFamilies"][-1].split())
    if settings.get("SystemCallFilter"):
        load_syscall_filter(allowed_syscalls(settings["SystemCallFilter"], syscall_groups()), errno_of(settings))
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
