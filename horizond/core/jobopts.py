"""Per-job options (issue 18): what a job declares, which value wins, and when it stops retrying.

Three sources, in this order of precedence: the values given at enqueue time (RQ's own
`retry=`/`job_timeout=`, or `meta=horizond.options(...)`), the job function's
`@job_options(...)`, then the supervisor's `tries`/`backoff`/`timeout`. Pure: the worker reads
the sources and acts on the answers, so the rules are tested here exhaustively.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

META_KEY = "horizond"  # job.meta[META_KEY]: {"options": {...}, "exceptions": n, "releases": n}


@dataclass(frozen=True)
class JobOptions:
    """A job's declared policy; None means "not declared here: ask the next source"."""

    tries: int | None = None  # attempts in all, the first included (Laravel's $tries)
    backoff: tuple[int, ...] | None = None  # seconds before each retry, the last repeating
    max_exceptions: int | None = None  # fail once the job has raised this many times
    retry_until: float | None = None  # absolute epoch seconds: no attempt starts after it
    retry_for: float | None = None  # the decorator's relative form: seconds after the job's creation
    timeout: int | None = None
    fail_on_timeout: bool | None = None

    def to_meta(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self)
                if (v := getattr(self, f.name)) is not None}


def parse(source: str, now: float, **given: Any) -> JobOptions:
    """Checked options from keyword arguments; ValueError names the argument at fault.

    `retry_until` may be a datetime (absolute), a timedelta or a number of seconds (relative:
    from `now` at enqueue time, from the job's creation for a decorator, source "decorator").
    """
    known = {"tries", "backoff", "max_exceptions", "retry_until", "timeout", "fail_on_timeout"}
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"{source}: unknown option {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for name in ("tries", "max_exceptions", "timeout"):
        if given.get(name) is not None:
            out[name] = _positive_int(source, name, given[name])
    if given.get("backoff") is not None:
        out["backoff"] = _backoff(source, given["backoff"])
    if given.get("fail_on_timeout") is not None:
        if not isinstance(given["fail_on_timeout"], bool):
            raise ValueError(f"{source}: fail_on_timeout must be True or False, not {given['fail_on_timeout']!r}")
        out["fail_on_timeout"] = given["fail_on_timeout"]
    until = given.get("retry_until")
    if until is not None:
        if isinstance(until, datetime):
            if until.tzinfo is None:
                raise ValueError(f"{source}: retry_until must be timezone-aware (a naive datetime is ambiguous)")
            out["retry_until"] = until.timestamp()
        else:
            seconds = until.total_seconds() if isinstance(until, timedelta) else until
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
                    or seconds <= 0:
                raise ValueError(f"{source}: retry_until must be a datetime, a timedelta or seconds > 0, "
                                 f"not {until!r}")
            if source == "decorator":
                out["retry_for"] = float(seconds)
            else:
                out["retry_until"] = now + float(seconds)
    return JobOptions(**out)


def from_meta(raw: Any) -> JobOptions:
    """Options stored in a job's meta at enqueue time; anything malformed is ignored field by
    field (a job is never failed for a meta it cannot read)."""
    if not isinstance(raw, dict):
        return JobOptions()
    out = {}
    for f in fields(JobOptions):
        value = raw.get(f.name)
        if value is None:
            continue
        if f.name == "backoff" and isinstance(value, list) and all(_is_count(v) for v in value) and value:
            out["backoff"] = tuple(int(v) for v in value)
        elif f.name == "fail_on_timeout" and isinstance(value, bool):
            out[f.name] = value
        elif f.name in ("retry_until", "retry_for") and isinstance(value, int | float) \
                and not isinstance(value, bool) and math.isfinite(value):
            out[f.name] = float(value)
        elif f.name in ("tries", "max_exceptions", "timeout") and _is_count(value) and value >= 1:
            out[f.name] = int(value)
    return JobOptions(**out)


def merge(*sources: JobOptions | None) -> JobOptions:
    """Field by field, the first source that declares a value wins."""
    merged = JobOptions()
    for source in reversed([s for s in sources if s is not None]):
        merged = replace(merged, **{f.name: v for f in fields(source) if (v := getattr(source, f.name)) is not None})
    return merged


def deadline(options: JobOptions, created_at: float | None) -> float | None:
    """The moment after which no attempt starts (the earlier of the two forms), or None."""
    moments = [options.retry_until] if options.retry_until is not None else []
    if options.retry_for is not None and created_at is not None:
        moments.append(created_at + options.retry_for)
    return min(moments, default=None)


def stop_retrying(options: JobOptions, exceptions: int, now: float, next_interval: float,
                  timed_out: bool, created_at: float | None) -> str | None:
    """Why a job that just raised (its `exceptions`-th exception) must not be tried again, or
    None when its tries decide as usual."""
    if timed_out and options.fail_on_timeout:
        return "fail_on_timeout: the job timed out"
    if options.max_exceptions is not None and exceptions >= options.max_exceptions:
        return f"max_exceptions: the job raised {exceptions} times"
    until = deadline(options, created_at)
    if until is not None and now + next_interval > until:
        return "retry_until: the next attempt would start after the job's deadline"
    return None


def _positive_int(source: str, name: str, value: Any) -> int:
    if not _is_count(value) or value < 1:
        raise ValueError(f"{source}: {name} must be a whole number >= 1, not {value!r}")
    return int(value)


def _backoff(source: str, value: Any) -> tuple[int, ...]:
    steps = [value] if _is_count(value) else value
    if not isinstance(steps, list | tuple) or not steps or not all(_is_count(s) and s >= 0 for s in steps):
        raise ValueError(f"{source}: backoff must be seconds >= 0 or a non-empty list of them, not {value!r}")
    return tuple(int(s) for s in steps)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
