"""The [supervisors.NAME] and [defaults] tables -> SupervisorConfig (part of config.py's parse).

Pure, as config.py: every rule of a supervisor's keys lives here, with the bounds the README's
"Bounds" table lists (a test holds the two together). Inherited [defaults] values are reported
once, in [defaults], not once per supervisor that inherits them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from horizond.core.balancer import MODES as BALANCE_MODES  # one list of modes: the balancer's
from horizond.core.balancer import STRATEGIES
from horizond.core.configcheck import Checker as _Checker
from horizond.core.configcheck import describe as _kind

MAX_PROCESSES_CAP = 1000
MAX_FLEET_PROCESSES = 1_000_000  # a fleet budget: processes over all nodes
MAX_MB = 1_048_576  # 1 TiB
MAX_SECONDS = 2_592_000  # 30 days: a job timeout or a back-off longer than that is a mistake
MAX_BACKOFF_STEPS = 1000

# The bounds of every supervisor key: (lowest, highest, unit). What the check accepts here is
# what runs (alarm(2) takes at most 2**31 - 1 s, Redis' EXPIRE and datetime have ranges too);
# README "Bounds" lists the same table, and a test holds the two together.
SUPERVISOR_BOUNDS: dict[str, tuple[float, float, str]] = {
    "min_processes": (0, MAX_PROCESSES_CAP, ""),
    "max_processes": (1, MAX_PROCESSES_CAP, ""),
    "balance_max_shift": (1, MAX_PROCESSES_CAP, ""),
    "balance_cooldown": (0.1, 3600, "s"),
    "memory": (1, MAX_MB, "MB"),
    "memory_hard": (0, MAX_MB, "MB"),
    "timeout": (1, MAX_SECONDS, "s"),
    "tries": (1, 1000, ""),
    "backoff": (0, MAX_SECONDS, "s"),  # each value
    "max_jobs": (0, 1_000_000_000, ""),
    "max_time": (0, 31_536_000, "s"),
    "min_free_memory": (0, MAX_MB, "MB"),  # or "0%" .. "100%"
    "fleet_max_processes": (1, MAX_FLEET_PROCESSES, ""),  # or unset: no fleet budget
}


@dataclass(frozen=True)
class SupervisorConfig:
    name: str
    queues: tuple[str, ...] = ("default",)
    balance: str = "auto"
    auto_scaling_strategy: str = "time"
    min_processes: int = 1
    max_processes: int = 10
    balance_max_shift: int = 1
    balance_cooldown: float = 3.0
    memory: int = 128
    memory_hard: int = 0  # MB; 0 = off. Over it during a job, the master kills the worker.
    timeout: int = 60
    tries: int = 1
    backoff: tuple[int, ...] = (0,)
    max_jobs: int = 0
    max_time: int = 0
    worker_class: str | None = None
    min_free_memory: str = "5%"  # no scale-up while the host has less available: "512" MB or "5%"
    fleet_max_processes: int | None = None  # the most processes over all nodes (fleet/leader.py); None = no budget

    def free_memory_floor(self, total_bytes: int) -> int:
        """min_free_memory in bytes for a host with this much memory."""
        if self.min_free_memory.endswith("%"):
            return int(total_bytes * float(self.min_free_memory[:-1]) / 100)
        return int(self.min_free_memory) * 1024 * 1024


_SUPERVISOR_KEYS = {f.name for f in fields(SupervisorConfig)} - {"name"}

_SUPERVISOR_KINDS = {
    "queues": "strs",
    "balance": "str",
    "auto_scaling_strategy": "str",
    "min_processes": "int",
    "max_processes": "int",
    "balance_max_shift": "int",
    "balance_cooldown": "number",
    "memory": "int",
    "memory_hard": "int",
    "timeout": "int",
    "tries": "int",
    "backoff": "backoff",
    "max_jobs": "int",
    "max_time": "int",
    "worker_class": "str",
    "min_free_memory": "memory",
    "fleet_max_processes": "int",
}


# --- supervisors ---------------------------------------------------------------


def _supervisor(check: _Checker, name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> SupervisorConfig:
    table = f"supervisors.{name}"
    check.unknown_keys(table, raw, _SUPERVISOR_KEYS)
    merged = {**defaults, **raw}
    values: dict[str, Any] = {}
    bad: set[str] = set()  # keys with a type error: their default stands in, never re-judged
    base = SupervisorConfig(name=name)
    for key, kind in _SUPERVISOR_KINDS.items():
        where = table if key in raw else "defaults"
        before = len(check.issues)
        values[key] = check.get(where, merged, key, kind, getattr(base, key))
        if len(check.issues) > before:
            bad.add(key)

    def origin(*keys: str) -> str:
        """A value inherited from [defaults] is reported there (once), not once per supervisor."""
        return table if any(k in raw for k in keys) or not any(k in defaults for k in keys) else "defaults"

    _check_supervisor_values(check, origin, values, bad)
    return SupervisorConfig(name=name, **values)


def _check_supervisor_values(check: _Checker, origin: Callable[..., str], v: dict[str, Any], bad: set[str]) -> None:
    """`origin(*keys)` names the table the values came from; `bad` keys already had a type error."""
    if not v["queues"]:
        check.add(origin("queues"), "queues", "expected at least one queue name")
    elif any(not q.strip() for q in v["queues"]):
        check.add(origin("queues"), "queues", "queue names must not be empty")
    elif len(set(v["queues"])) != len(v["queues"]):
        check.add(origin("queues"), "queues", "a queue is listed twice")
    if v["balance"] not in BALANCE_MODES:
        check.add(origin("balance"), "balance",
                  f"expected one of {', '.join(map(repr, BALANCE_MODES))}, got {v['balance']!r}")
    if v["auto_scaling_strategy"] not in STRATEGIES:
        check.add(origin("auto_scaling_strategy"), "auto_scaling_strategy",
                  f"expected one of {', '.join(map(repr, STRATEGIES))}, got {v['auto_scaling_strategy']!r}")
    for key, bounds in SUPERVISOR_BOUNDS.items():
        if key not in bad and key not in ("backoff", "min_free_memory") and v[key] is not None and \
                not check.within(origin(key), key, v[key], bounds):
            bad.add(key)
    if v["min_processes"] > v["max_processes"] and not bad & {"min_processes", "max_processes"}:
        check.add(origin("min_processes", "max_processes"), "min_processes",
                  f"min_processes ({v['min_processes']}) is greater than max_processes ({v['max_processes']})")
    budget = v["fleet_max_processes"]
    if budget is not None and not bad & {"fleet_max_processes", "min_processes"} and budget < v["min_processes"]:
        check.add(origin("fleet_max_processes", "min_processes"), "fleet_max_processes",
                  f"fleet_max_processes ({budget}) is below min_processes ({v['min_processes']}): "
                  "not even one node could run its floor")
    lo, hi, _ = SUPERVISOR_BOUNDS["backoff"]
    if any(not lo <= b <= hi for b in v["backoff"]):
        check.add(origin("backoff"), "backoff", f"each value must be between {lo} and {hi} s, got {list(v['backoff'])}")
    elif len(v["backoff"]) > MAX_BACKOFF_STEPS:
        check.add(origin("backoff"), "backoff", f"at most {MAX_BACKOFF_STEPS} values, got {len(v['backoff'])}")
    memory = v["min_free_memory"]
    if not memory.endswith("%") and int(memory) > MAX_MB:
        check.add(origin("min_free_memory"), "min_free_memory", f"must be between 0 and {MAX_MB} MB, got {memory}")
    if 0 < v["memory_hard"] < v["memory"] and not bad & {"memory", "memory_hard"}:
        check.add(origin("memory_hard"), "memory_hard",
                  f"memory_hard ({v['memory_hard']} MB) must be above memory ({v['memory']} MB), or 0 for off")
    worker_class = v["worker_class"]
    if worker_class is not None and not _is_dotted_path(worker_class):
        check.add(origin("worker_class"), "worker_class",
                  f"expected a dotted path like 'rq.worker.Worker', got {worker_class!r}")


def _is_dotted_path(path: str) -> bool:
    parts = path.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def supervisors(check: _Checker, tables: Mapping[str, Mapping[str, Any]]) -> tuple[SupervisorConfig, ...]:
    supervisors = []
    for name, raw in tables["supervisors"].items():
        if not isinstance(raw, dict):
            check.add("supervisors", name, f"expected a table [supervisors.{name}], got {_kind(raw)}")
            continue
        supervisors.append(_supervisor(check, name, raw, tables["defaults"]))
    if not supervisors:
        check.add("supervisors", None, "no supervisor defined; add at least one [supervisors.NAME] table")
    _check_defaults_types(check, tables["defaults"])
    return tuple(supervisors)


def _check_defaults_types(check: _Checker, defaults: Mapping[str, Any]) -> None:
    """A bad [defaults] value is reported once, even when no supervisor inherits it."""
    for key, kind in _SUPERVISOR_KINDS.items():
        if key in defaults:
            check.get("defaults", defaults, key, kind, None)


