"""Health evaluation: measured values + [warning, critical] thresholds -> green/yellow/red.

Pure, so each threshold is tested on its edges. Nagios convention for exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass

GREEN, YELLOW, RED = "green", "yellow", "red"
EXIT = {GREEN: 0, YELLOW: 1, RED: 2}
DEFAULTS = {
    "failed_jobs": (10, 50),
    "queue_size": (1000, 5000),
    "oldest_job_age": (7200, 21600),
    "worker_memory": (0.8, 0.9),
}
UNITS = {"failed_jobs": "jobs", "queue_size": "jobs", "oldest_job_age": "s", "worker_memory": "of limit"}


@dataclass(frozen=True)
class Indicator:
    name: str
    value: float | None
    level: str
    detail: str


def grade(name: str, value: float | None, thresholds: tuple[float, float], detail: str = "") -> Indicator:
    """Yellow from the warning threshold on, red from the critical one (both inclusive)."""
    warning, critical = thresholds
    if value is None:
        return Indicator(name, None, GREEN, detail or "nothing to measure")
    level = RED if value >= critical else YELLOW if value >= warning else GREEN
    shown = f"{value:.0%}" if name == "worker_memory" else f"{value:g} {UNITS.get(name, '')}".strip()
    return Indicator(name, value, level, f"{shown} (warning {warning:g}, critical {critical:g})"
                     + (f"; {detail}" if detail else ""))


def verdict(indicators: list[Indicator]) -> str:
    levels = {i.level for i in indicators}
    return RED if RED in levels else YELLOW if YELLOW in levels else GREEN
