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


class PreloadAborted(Exception):
    """A preloaded module tried to end the process (sys.exit, KeyboardInterrupt): start-up stops."""


def preload(modules: tuple[str, ...]) -> None:
    """Import app modules once, before forking, so workers share them copy-on-write.

    A module that fails to import is logged and skipped: its jobs then fail with
    the import error in RQ's failed registry, visibly, and nothing crash-loops.
    One that raises SystemExit or KeyboardInterrupt while imported asked for the
    process to end: horizond does not start (a non-zero exit, so systemd restarts
    it), never exiting 0 silently or with a traceback.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            log.error("preload failed", extra={"event": "preload_failed", "preload": name,
                                               "error": f"{type(exc).__name__}: {exc}"})
        except BaseException as exc:
            what = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else type(exc).__name__
            log.error(f"preload failed: importing {name} raised {what}; not starting", extra={
                "event": "preload_failed", "preload": name, "error": what})
            raise PreloadAborted(name) from None
