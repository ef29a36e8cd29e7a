"""A stand-in for a large application: many modules and ~40 MB of tables built at import.

Used by scripts/bench to show per-worker memory with and without [app] preload.
"""

import asyncio  # noqa: F401
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import sqlite3  # noqa: F401
import xml.etree.ElementTree  # noqa: F401

TABLE = {i: f"value-{i}" * 4 for i in range(300_000)}
ROWS = [(i, float(i), str(i)) for i in range(150_000)]


def lookup(key: int) -> str:
    return TABLE[key]
