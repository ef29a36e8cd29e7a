"""Crash-loop back-off for worker slots.

Pure. A slot whose workers keep dying is restarted later and later (1, 2, 4 ...
capped at 60 s) so a broken deploy never makes the master spin; a worker that
stays up long enough, finished a job, or leaves on purpose, clears the record.
A worker that finished a job has shown the code and the deploy work: its death
(OOM killer, an operator's kill, a job that crashed it, which is settled on its
own) is not a crash loop, and waiting to replace it would only leave work undone.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DELAY = 60.0
STABLE_AFTER = 30.0  # seconds of life that prove a worker is healthy


@dataclass(frozen=True)
class SlotHealth:
    failures: int = 0
    not_before: float = 0.0  # monotonic time before which no restart happens
    last_exit: str = ""

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    @property
    def backing_off(self) -> bool:
        return self.failures >= 2


def delay_for(failures: int) -> float:
    """First failure restarts at once; the second waits 1 s, then doubling up to 60 s."""
    if failures <= 1:
        return 0.0
    return min(MAX_DELAY, 2.0 ** (failures - 2))


def after_exit(health: SlotHealth, *, failed: bool, lived: float, now: float, how: str,
               worked: bool = False) -> SlotHealth:
    """The slot's record after its worker exited; `failed` = not asked to, not a recycle;
    `worked` = it finished at least one job."""
    if not failed or lived >= STABLE_AFTER or worked:
        return SlotHealth(0, now, how)
    failures = health.failures + 1
    return SlotHealth(failures, now + delay_for(failures), how)
