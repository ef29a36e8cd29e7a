"""Reading checked values out of a parsed TOML document, collecting every problem.

Pure: a Checker is handed tables and keys, converts each value to the expected
shape or records an issue naming the file, table and key (with a did-you-mean
for unknown keys), so that config.build can report every mistake at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigIssue:
    """One thing wrong with a config file, located precisely enough to fix it."""

    source: str
    table: str
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"[{self.table}]" if self.table else "top level"
        key = f" key '{self.key}'" if self.key else ""
        return f"{self.source}: {where}{key}: {self.message}"


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class Checker:
    """Collects issues while reading values of the expected shape out of tables."""

    def __init__(self, source: str):
        self.source = source
        self.issues: list[ConfigIssue] = []

    def add(self, table: str, key: str | None, message: str) -> None:
        self.issues.append(ConfigIssue(self.source, table, key, message))

    def unknown_keys(self, table: str, data: Mapping[str, Any], allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                tip = f" (did you mean '{hint[0]}'?)" if hint else f"; expected one of: {', '.join(sorted(allowed))}"
                self.add(table, key, f"unknown key{tip}")

    def table(self, table: str, data: Mapping[str, Any], key: str) -> dict:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.add(table or key, None if not table else key, f"expected a table, got {describe(value)}")
            return {}
        return value

    def within(self, table: str, key: str, value: Any, bounds: tuple[float, float, str]) -> bool:
        """Record an issue unless lo <= value <= hi (nan and inf are outside any bounds)."""
        lo, hi, unit = bounds
        if lo <= value <= hi:
            return True
        unit = f" {unit}" if unit else ""
        self.add(table, key, f"must be between {plain(lo)} and {plain(hi)}{unit}, got {short(value)}")
        return False

    def get(self, table: str, data: Mapping[str, Any], key: str, kind: str, default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        checked = _CONVERTERS[kind](value)
        if checked is BAD:
            self.add(table, key, f"expected {_KIND_TEXT[kind]}, got {describe(value)} {short(value)}")
            return default
        return checked


BAD = object()


def int_(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else BAD


def number(value: Any) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok else BAD


def _str(value: Any) -> Any:
    return value if isinstance(value, str) else BAD


def _str_list(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return BAD


def _memory_amount(value: Any) -> Any:
    """MB as an integer, or a percentage of the host's memory as "N%"."""
    if int_(value) is not BAD and value >= 0:
        return str(value)
    # ASCII digits only: str.isdigit() and \d also take "²" or "٣", which int() then refuses
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?%", value) and float(value[:-1]) <= 100:
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value):  # MB, as `config show` prints it back
        return value
    return BAD


def _backoff(value: Any) -> Any:
    if int_(value) is not BAD:
        return (value,)
    if isinstance(value, list) and value and all(int_(v) is not BAD for v in value):
        return tuple(value)
    return BAD


_CONVERTERS = {"int": int_, "number": number, "str": _str, "strs": _str_list, "backoff": _backoff,
               "memory": _memory_amount}
_KIND_TEXT = {
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "strs": "a list of strings",
    "backoff": "an integer or a non-empty list of integers (seconds)",
    "memory": 'megabytes (an integer >= 0) or a percentage like "5%"',
}


def plain(number: float) -> str:
    """A bound as people write it: 31536000, not 3.1536e+07; 0.1 stays 0.1."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def short(value: Any, limit: int = 80) -> str:
    """repr for an error message: a huge or deeply nested value must not make a huge message."""
    try:
        text = repr(value)
    except RecursionError:
        return "(nested too deeply to show)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
