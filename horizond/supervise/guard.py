"""Guard: the master's watch over what its workers hold, so no job is lost.

Every tick: kill a worker whose job overran its timeout (stuck in C code, signals
blocked); settle the job of any worker that died holding one, retrying while Redis
is away; sweep intermediate lists. Every MEMORY_HARD_EVERY seconds, on a deadline of
its own the loop wakes for (memory_due_in), only while a worker of a supervisor with
memory_hard runs a job: kill a worker whose RSS passed memory_hard. At start-up:
settle the jobs of workers that died with a previous master.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import psutil
from redis import Redis

from horizond.core.config import Config, SupervisorConfig
from horizond.supervise import recovery
from horizond.supervise.process import WorkerProcess
from horizond.supervise.scaling import existing_queues, resolve
from horizond.sysutil import hostname

log = logging.getLogger("horizond.guard")

SWEEP_EVERY = 5.0
RETRY_EVERY = 2.0
MEMORY_HARD_EVERY = 0.25  # a job passes memory_hard by what it allocates in this long (README: No job lost)
MB = 1024 * 1024


@dataclass
class Unsettled:
    job_id: str
    worker_name: str
    supervisor: SupervisorConfig
    cause: str
    queues: tuple[str, ...]


class Guard:
    def __init__(self):
        self.unsettled: list[Unsettled] = []
        self.sweep = recovery.IntermediateSweep()
        self._last_sweep = 0.0
        self._last_retry = 0.0
        self._recovery_pending = False
        self._memory_due = 0.0  # monotonic time of the next memory_hard check

    # --- limits ---------------------------------------------------------------------

    def check_limits(self, procs: list[WorkerProcess], config: Config, now: float) -> None:
        """Hard timeouts on every pass (cheap); memory_hard when its deadline has come."""
        for proc in procs:
            if proc.state != "busy" or proc.kill_sent is not None or proc.spec.supervisor is None:
                continue
            timeout = proc.job_timeout or 0
            if timeout > 0 and proc.job_started is not None and \
                    now - proc.job_started > timeout + config.hard_timeout_grace:
                self._kill(proc, now, f"{recovery.HARD_TIMEOUT}: still running {now - proc.job_started:.0f}s into a "
                                      f"{timeout:g}s job timeout (the worker did not stop it itself)")
        if now >= self._memory_due:
            self._memory_due = now + MEMORY_HARD_EVERY
            for proc in filter(_memory_watched, procs):
                self._check_memory(proc, now)

    def memory_due_in(self, procs, now: float) -> float | None:
        """Seconds until the loop must wake for memory_hard; None while no job runs under it (idle stays cheap)."""
        return self._memory_due - now if any(map(_memory_watched, procs)) else None

    def _check_memory(self, proc: WorkerProcess, now: float) -> None:
        limit = proc.spec.supervisor.memory_hard
        rss = _rss(proc.pid)
        if rss is not None and proc.horse_pid:  # fork-per-job: the job runs in the horse
            rss += _rss(proc.horse_pid) or 0
        if rss is not None:
            proc.rss = rss
            if rss > limit * MB:
                self._kill(proc, now, f"memory_hard: RSS {rss // MB} MB over {limit} MB")

    def _kill(self, proc: WorkerProcess, now: float, cause: str) -> None:
        proc.kill_cause = cause
        log.warning("killing a worker", extra={"event": "worker_killed", "pid": proc.pid, "job_id": proc.job_id,
                                               "supervisor": proc.spec.supervisor.name, "cause": cause})
        proc.kill(now)

    # --- dead workers -------------------------------------------------------------------

    def settle(self, redis: Redis, proc: WorkerProcess, how: str, try_now: bool = True) -> bool:
        """A worker exited uncleanly: its job (if any) is retried or failed, its record removed.

        False when Redis could not be reached (the item waits for the next retry pass).
        """
        if not proc.name:
            return True  # it never registered, so it never held a job
        cause = proc.kill_cause or how
        if proc.rss:
            cause += f" (last RSS {proc.rss // MB} MB)"
        job = proc.job_id if proc.state == "busy" else None
        queues = proc.spec.queues or proc.spec.supervisor.queues
        item = Unsettled(job or "", proc.name, proc.spec.supervisor, cause, queues)
        if try_now and self._settle(redis, item):
            return True
        self.unsettled.append(item)
        return False

    def _settle(self, redis: Redis, item: Unsettled) -> bool:
        try:
            if item.job_id:
                recovery.settle_lost_job(redis, item.job_id, item.worker_name, item.supervisor, item.cause)
            recovery.forget_worker(redis, item.worker_name, item.queues)
            return True
        except Exception as exc:  # Redis away: keep it and try again, the job is still recorded as started
            log.error("cannot settle a dead worker's job yet; will retry", extra={
                "event": "recovery_deferred", "job_id": item.job_id, "error": str(exc)})
            return False

    def step(self, redis: Redis, config: Config, queues: tuple[str, ...], procs: list[WorkerProcess],
             now: float) -> None:
        if (self.unsettled or self._recovery_pending) and now - self._last_retry >= RETRY_EVERY:
            self._last_retry = now
            if self._recovery_pending:
                self.recover_at_startup(redis, config)
            still = []
            for index, item in enumerate(self.unsettled):
                if not self._settle(redis, item):
                    still = self.unsettled[index:]  # Redis is away: try the rest next time
                    break
            self.unsettled = still
        if now - self._last_sweep >= SWEEP_EVERY:
            self._last_sweep = now
            holding = {p.job_id for p in procs if p.job_id}
            try:
                self.sweep.run(redis, queues, now, holding)
            except Exception as exc:
                log.debug("intermediate sweep skipped", extra={"event": "sweep_failed", "error": str(exc)})

    # --- start-up ---------------------------------------------------------------------------

    def recover_at_startup(self, redis: Redis, config: Config, try_now: bool = True) -> None:
        """Settle what workers of a crashed master on this host were running.

        `try_now` False: Redis is known to be away, so do not wait out its timeout again."""
        me = os.getpid()  # this master has no workers yet: its pid in a name is a previous image's (re-exec)

        def previous_master_alive(pid: int, start: str | None) -> bool:
            return pid != me and recovery.horizond_alive(pid, start)

        try:
            if not try_now:
                raise ConnectionError("Redis unreachable at start-up")
            queues = resolve(config.all_queues(), existing_queues(redis))
            orphans = recovery.orphans_at_startup(redis, queues, hostname(), previous_master_alive)
            stale = recovery.stale_workers(redis, hostname(), previous_master_alive)
        except Exception as exc:
            log.error("start-up recovery deferred: Redis unavailable; retrying", extra={
                "event": "recovery_deferred", "error": str(exc)})
            self._recovery_pending = True
            return
        self._recovery_pending = False
        for job_id, worker in orphans:
            sup = _supervisor_for(config, job_id, redis) or config.supervisors[0]
            self.unsettled.append(Unsettled(job_id, worker, sup, "its master died (crash or SIGKILL)", sup.queues))
        for worker in stale:
            if worker not in {u.worker_name for u in self.unsettled}:
                self.unsettled.append(Unsettled("", worker, config.supervisors[0], "", queues))
        if orphans or stale:
            log.warning("recovering after a crashed master", extra={
                "event": "startup_recovery", "jobs": [j for j, _ in orphans], "workers": len(stale)})
        self.unsettled = [item for item in self.unsettled if not self._settle(redis, item)]


def _memory_watched(proc: WorkerProcess) -> bool:
    """A worker running a job under memory_hard, not already being killed."""
    sup = proc.spec.supervisor
    return proc.state == "busy" and proc.kill_sent is None and sup is not None and bool(sup.memory_hard)


def _supervisor_for(config: Config, job_id: str, redis: Redis) -> SupervisorConfig | None:
    origin = redis.hget(f"rq:job:{job_id}", "origin")
    name = origin.decode() if origin else ""
    return next((s for s in config.supervisors if name in resolve(s.queues, [name])), None)


def _rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None
