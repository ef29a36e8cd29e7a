"""Logging: JSON lines on stderr (journald keeps each field), or text for a terminal.

Every record may carry `event` plus context fields (supervisor, pid, job_id ...)
passed through `extra=`; both formats show them.
"""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter

STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _Context(logging.Filter):
    """Adds the process's role and pid to every record (master or a worker)."""

    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        if not hasattr(record, "pid"):
            record.pid = os.getpid()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS and k != "role"}
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        return f"{base} {tail}" if tail else base


def setup(fmt: str = "auto", level: int = logging.INFO, role: str = "master") -> None:
    """fmt: "json", "text", "journal", or "auto" (journal when stderr is journald, else json)."""
    from horizond.observe import journal

    if fmt == "auto":
        fmt = "journal" if journal.stderr_is_journal() else "json"
    if fmt == "journal":
        path = os.environ.get("HORIZOND_JOURNAL_SOCKET", journal.JOURNAL_SOCKET)
        handler = journal.JournalHandler(path, standard=STANDARD_ATTRS)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s [%(role)s] %(message)s"))
    elif fmt == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    handler.addFilter(_Context(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def set_role(role: str) -> None:
    """Called in a forked child so its records say which process wrote them."""
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, _Context):
                f.role = role
