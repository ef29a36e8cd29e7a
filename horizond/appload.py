"""The application's code in the master: import paths and preloaded modules."""

from __future__ import annotations

import importlib
import logging
import sys

log = logging.getLogger("horizond.master")


def extend_sys_path(paths: tuple[str, ...]) -> None:
    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)


def preload(modules: tuple[str, ...]) -> None:
    """Import app modules once, before forking, so workers share them copy-on-write.

    A module that fails to import is logged and skipped: its jobs then fail with
    the import error in RQ's failed registry, visibly, and nothing crash-loops.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.error("preload failed", extra={"event": "preload_failed", "preload": name,
                                               "error": f"{type(exc).__name__}: {exc}"})
