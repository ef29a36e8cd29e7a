"""Jobs for tests/test_hardening.py: what job code can and cannot do inside the hardened unit."""

from __future__ import annotations

import mmap
import os
import socket
import ssl


def fetch_tls(port: int, cafile: str) -> str:
    """A TLS connection to the test's server, the certificate verified (name lookup included)."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("localhost", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return f"{tls.recv(64).decode()} over {tls.version()}"


def _refused(call) -> str:
    try:
        call()
    except OSError as exc:
        return os.strerror(exc.errno)
    return "allowed"


def probe() -> dict[str, str]:
    """Each thing the unit forbids, and what job code gets when it tries it."""
    return {
        "packet socket": _refused(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
        "netlink socket": _refused(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
        "chroot": _refused(lambda: os.chroot("/")),
        "setuid": _refused(lambda: os.setuid(os.getuid())),
        "write+exec memory": _refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),
        "write /etc": _refused(lambda: open("/etc/horizond-sandbox-probe", "w")),
        "capabilities": open("/proc/self/status").read().split("CapEff:")[1].split()[0],
    }
