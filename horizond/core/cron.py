"""Periodic jobs and maintenance (issue 18): the [cron.NAME] and [maintenance] tables, and when an
occurrence is due.

Pure: the shell (supervise/cron.py) claims each occurrence in Redis, so that it runs once across
every master of the fleet. Here: what the tables mean, and, given the last occurrence claimed and
the time now, which occurrence is due, how many were missed, and when the next one falls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAINTENANCE = "maintenance"  # the [maintenance] table's entry name (no [cron.maintenance] may exist)
MISSED_CAP = 1000  # missed occurrences counted at most (a years-long outage of an every-second entry)


@dataclass(frozen=True)
class CronEntry:
    name: str
    cron: str  # five fields, or six with seconds last (croniter's form)
    func: str | None = None  # None: the maintenance entry
    queue: str = "default"
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    timezone: str = "UTC"
    prune_failed_hours: float | None = None  # maintenance only

    def zone(self):
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Due:
    occurrence: float | None  # the occurrence to run now (epoch seconds), None: nothing due
    missed: int  # older occurrences skipped since the last claimed one (all masters were down)
    first: bool  # nothing was ever claimed: the clock starts now, nothing runs for the past


def previous(entry: CronEntry, now: float) -> float:
    """The latest occurrence at or before `now` (croniter's get_prev is strictly before)."""
    start = datetime.fromtimestamp(now, entry.zone()) + timedelta(microseconds=1)
    return croniter(entry.cron, start).get_prev(float)


def following(entry: CronEntry, now: float) -> float:
    """The first occurrence after `now`."""
    return croniter(entry.cron, datetime.fromtimestamp(now, entry.zone())).get_next(float)


def due(entry: CronEntry, last: float | None, now: float) -> Due:
    """Which occurrence a master should claim now, given the last one claimed fleet-wide."""
    latest = previous(entry, now)
    if last is None:
        return Due(None, 0, True)
    if latest <= last:
        return Due(None, 0, False)
    missed, moment = 0, latest
    while missed < MISSED_CAP:
        moment = croniter(entry.cron, datetime.fromtimestamp(moment, entry.zone())).get_prev(float)
        if moment <= last:
            break
        missed += 1
    return Due(latest, missed, False)


def parse_tables(check, cron_table: dict, maintenance: dict) -> dict:
    """[cron.NAME] tables and the [maintenance] table -> Config fields; issues go to `check`."""
    entries = []
    for name, raw in cron_table.items():
        if not isinstance(raw, dict):
            check.add("cron", name, f"expected a table [cron.{name}], got {type(raw).__name__}")
            continue
        table = f"cron.{name}"
        check.unknown_keys(table, raw, {"cron", "func", "queue", "args", "kwargs", "timezone"})
        func = check.get(table, raw, "func", "str", None)
        if func is None:
            check.add(table, "func", "missing: the dotted path of the job function, like \"app.jobs.nightly\"")
        elif not all(part.isidentifier() for part in func.split(".")) or "." not in func:
            check.add(table, "func", f"expected a dotted path like \"app.jobs.nightly\", got {func!r}")
        args = raw.get("args", [])
        if not isinstance(args, list):
            check.add(table, "args", f"expected a list, got {type(args).__name__}")
            args = []
        kwargs = raw.get("kwargs", {})
        if not isinstance(kwargs, dict):
            check.add(table, "kwargs", f"expected a table, got {type(kwargs).__name__}")
            kwargs = {}
        entries.append(CronEntry(name=name, cron=_cron(check, table, raw), func=func,
                                 queue=check.get(table, raw, "queue", "str", "default") or "default",
                                 args=tuple(args), kwargs=tuple(sorted(kwargs.items())),
                                 timezone=_zone(check, table, raw)))
    if MAINTENANCE in cron_table:
        check.add("cron", MAINTENANCE, "the name is reserved for the [maintenance] table")
    entry = None
    if maintenance:
        check.unknown_keys("maintenance", maintenance, {"cron", "prune_failed_hours", "timezone"})
        hours = check.get("maintenance", maintenance, "prune_failed_hours", "number", None)
        if hours is not None and not 0 < hours <= 24 * 3650:
            check.add("maintenance", "prune_failed_hours", f"expected hours > 0 (up to 10 years), got {hours!r}")
        entry = CronEntry(name=MAINTENANCE, cron=_cron(check, "maintenance", maintenance, "0 3 * * *"),
                          timezone=_zone(check, "maintenance", maintenance), prune_failed_hours=hours)
    return {"cron": tuple(entries), "maintenance": entry}


def _cron(check, table: str, raw: dict, default: str | None = None) -> str:
    expression = check.get(table, raw, "cron", "str", default)
    if expression is None:
        check.add(table, "cron", 'missing: a cron expression like "0 2 * * *" (minute hour day month weekday)')
        return "0 0 * * *"
    if not croniter.is_valid(expression) or len(expression.split()) not in (5, 6):
        check.add(table, "cron", f'expected a cron expression like "0 2 * * *" (5 fields, or 6 with seconds '
                                 f'last), got {expression!r}')
        return "0 0 * * *"
    return expression


def _zone(check, table: str, raw: dict) -> str:
    name = check.get(table, raw, "timezone", "str", "UTC")
    if name == "UTC":
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        check.add(table, "timezone", f'expected an IANA time zone like "Europe/Berlin" or "UTC", got {name!r}')
        return "UTC"
    return name
