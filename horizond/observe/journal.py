"""Native journald logging, so every log field is a structured journal field.

JSON on stderr reaches journald as one MESSAGE string; `journalctl -o json`
would then show the fields only inside it. When stderr *is* the journal
($JOURNAL_STREAM names it), records go over journald's native protocol instead:
EVENT=, SUPERVISOR=, JOB_ID= ... become fields one can filter on
(`journalctl -u horizond EVENT=worker_crash_loop`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def stderr_is_journal(environ=os.environ) -> bool:
    """systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to stderr."""
    value = environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def field_name(key: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in key.upper()).lstrip("_")
    return name or "FIELD"


def encode(fields: dict[str, str]) -> bytes:
    """journald's native format: KEY=value lines; values with newlines are length-prefixed."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    def __init__(self, path: str = JOURNAL_SOCKET, standard: frozenset[str] = frozenset(),
                 identifier: str = "horizond"):
        super().__init__()
        self.path = path
        self.standard = standard  # LogRecord's own attributes, not fields of ours
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Never wait for the journal: a full receive queue (journald stalled) would stall the
        # master's loop, watchdog pings included. Such a line goes to stderr instead.
        self.sock.setblocking(False)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        fields = {
            "MESSAGE": message,
            "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
        }
        for key, value in vars(record).items():
            if key not in self.standard:
                fields[field_name(key)] = value if isinstance(value, str) else json.dumps(value, default=str)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.sendto(encode(self.fields(record)), self.path)
        except OSError:  # the journal is gone or full: say it anyway
            sys.stderr.write(f"{record.levelname} {record.getMessage()}\n")
