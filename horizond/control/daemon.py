"""What the command layer needs of the running daemon: a narrow, typed interface.

The commands (commands.py) and the presenters (views.py) work against these
Protocols, never against the master itself: control/ imports nothing from
supervise/, and a test (or a future fleet agent) can stand in its own daemon.
The master (supervise/master.py) implements `Daemon`; its supervisors, slots and
worker handles satisfy the smaller Protocols by their plain attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from redis import Redis

from horizond.core.config import Config, SupervisorConfig
from horizond.core.restarts import SlotHealth
from horizond.observe.metrics import Metrics


class NoMaster(Exception):
    """Raised by a daemon that supervises nothing (the dashboard's process, web/daemon.py) when a
    command reads what only a master holds: its supervisors, workers, samples, tallies. The
    command layer answers it as "CMD needs a running master: <why>"."""


@runtime_checkable
class ProcessState(Protocol):
    """One worker (or the scheduler) as the master knows it from its state channel."""

    pid: int
    name: str
    state: str  # starting | idle | busy
    started: float
    rss: int
    jobs_done: int
    job_id: str | None
    job_queue: str | None
    job_started_wall: float | None
    job_timeout: float | None
    stop_sent: float | None


@runtime_checkable
class SlotState(Protocol):
    index: int
    process: ProcessState | None
    health: SlotHealth


@runtime_checkable
class PoolState(Protocol):
    key: str
    queues: tuple[str, ...]
    target: int
    reason: str

    def live(self) -> Sequence[ProcessState]: ...


@runtime_checkable
class SupervisorState(Protocol):
    """A supervisor's state for presenting, plus the one operator action on it (`pin`)."""

    config: SupervisorConfig
    paused: bool
    pinned: int | None
    memory_ok: bool
    retiring: Sequence[ProcessState]

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def pools(self) -> Mapping[str, PoolState]: ...
    def target(self) -> int: ...
    def slots(self) -> Sequence[SlotState]: ...
    def live(self) -> Sequence[ProcessState]: ...
    def processes(self) -> Sequence[ProcessState]: ...
    def pin(self, processes: int | None) -> None: ...


@dataclass
class QueueSample:
    """The loop's latest look at the queues (no Redis round trip to read it)."""

    pending: dict[str, int] = field(default_factory=dict)
    ages: dict[str, float] = field(default_factory=dict)
    estimated_waits: dict[str, float] = field(default_factory=dict)
    rate_limits: list[dict] = field(default_factory=list)
    rate_limit_keys: int = 0
    start_rates: list[dict] = field(default_factory=list)  # [limits] rate windows: started vs allowed


@runtime_checkable
class FleetAgent(Protocol):
    """This master as a fleet member (horizond/fleet/member.py), as the commands see it."""

    node: str
    desired: dict[str, str]  # the fleet's desired state as last read (core/fleetview.py)

    def held(self) -> frozenset[str]: ...  # supervisors the fleet holds paused here
    def entry(self) -> dict: ...  # this node's membership entry, built now (no Redis)
    def nodes(self) -> list[dict]: ...
    def view(self) -> dict: ...
    def send(self, action: str, supervisor: str | None, processes: int | None) -> dict: ...
    def confirmations(self, command_id: str) -> dict: ...


@runtime_checkable
class Daemon(Protocol):
    """The running daemon as every command sees it, whatever transport asked."""

    pid: int
    started: float  # wall clock
    stopping: bool
    config: Config
    redis: Redis
    metrics: Metrics
    fleet: FleetAgent

    @property
    def supervisors(self) -> Mapping[str, SupervisorState]: ...
    @property
    def removed(self) -> Sequence[SupervisorState]: ...  # draining after a reload dropped them
    @property
    def scheduler(self) -> SlotState: ...
    @property
    def redis_error(self) -> str | None: ...  # why Redis is considered away; None: it answers
    def redis_failed(self, exc: Exception) -> None: ...  # a command met Redis away: the loop learns it too
    def queues(self) -> tuple[str, ...]: ...
    def queue_sample(self) -> QueueSample: ...
    def set_paused(self, name: str | None, paused: bool) -> list[str]: ...
    def restart(self, name: str | None) -> list[str]: ...
    def reload(self) -> dict[str, Any]: ...  # {"applied": bool, "errors": [...]} or the summary
    def stop(self, force: bool, reason: str) -> None: ...
    def cron_schedule(self) -> list[dict]: ...  # [cron.NAME] and [maintenance]: next and last runs
    def breaker_rows(self) -> list[dict]: ...  # [breakers]: each one's last sampled state (no Redis call)
    def force_breaker(self, name: str, action: str) -> None: ...  # horizonctl breaker open|close NAME
    def pause_queue(self, queue: str, paused: bool) -> None: ...  # horizonctl queue pause|continue Q (fleet-wide)
    def paused_queues(self) -> list[str]: ...  # as last sampled
    def slo_rows(self) -> list[dict]: ...  # [slo]: each served queue's level over its window, as last read
