"""The master loop's duties: what it does on time rather than on every wakeup.

Each duty (the table in `_add_duties`) runs when it falls due (duties.py) and
returns its next deadline when nearer than its period. Events wake only the
duties they concern: a worker's report (master.py `_state_changed`), a child's
exit, a control action (AFTER_ACTION), a signal, Redis coming back (AFTER_REDIS).

| duty           | longest wait                  | nearer deadline it returns                    |
| balance        | 1 s                           | each supervisor's balance_cooldown            |
| slots          | 1 s                           | an empty slot's back-off end (>= 0.05 s)      |
| limits         | 1 s (hard timeouts)           | memory_hard: 0.25 s while a job runs under it |
| unblock        | 1 s (woken by events)         | 0.1 s while a worker must leave BLMOVE        |
| guard          | 1 s (retry 2 s, sweep 5 s)    |                                               |
| stop_deadlines | 1 s                           | the next stopping worker's kill deadline      |
| master_memory  | 10 s (first 10 s after start) |                                               |
| clients        | 1 s (control/exporter expiry) |                                               |
| sample         | 2 s (SAMPLE_EVERY)            | (also read before a balance if older than half its cooldown) |
| metrics_save   | 2 s (SAVE_EVERY)              | (woken by the first job after a quiet spell)  |
|                | ([slo] steps in its round trip)|                                               |
| snapshots      | [metrics] snapshot_interval   |                                               |
| redis_probe    | 1 s                           | PROBE_EVERY up; 0.25 s / 2 s while away       |
| systemd        | 1 s (STATUS, drain time)      | the watchdog ping                             |
| cron           | 60 s                          | the next occurrence; 0 while a prune runs     |
| fleet          | [fleet] heartbeat             | (woken by a message on the fleet's wake channel) |
| fleet_leader   | [fleet] heartbeat (2 s)       | (lease, grants, dead nodes: fleet/node.py)    |
"""

from __future__ import annotations

import logging
import time

from horizond.control.commands import READ_ONLY
from horizond.observe.metricstore import SAVE_EVERY, MetricStore, metrics_key
from horizond.observe.observer import SAMPLE_EVERY
from horizond.supervise import cron, reexec
from horizond.supervise.process import WorkerProcess
from horizond.supervise.supervisor import Supervisor
from horizond.worker.child import client_name

log = logging.getLogger("horizond.master")

TICK = 1.0  # the longest any duty waits: what an unwoken duty may lag behind its event
UNBLOCK_EVERY = 0.1
# An idle worker acknowledges a change of the held queues within milliseconds of being unblocked;
# one that has not in this long is not reading its channel (a worker class of the user's own):
# CLIENT LIST every 0.1 s for it would only load Redis.
HOLD_ACK_WINDOW = 10.0
MEMORY_CHECK_EVERY = 10.0
RETRY_BALANCE = 0.25  # a balancing step that could not read the queues tries again this soon
# duties a control action (scale, pause, restart, reload, terminate ...) or a signal may have made due
AFTER_ACTION = ("balance", "slots", "unblock", "limits", "stop_deadlines", "sample", "systemd")
# duties skipped while Redis was away: they run as soon as a probe sees it back
AFTER_REDIS = ("balance", "unblock", "guard", "sample", "metrics_save", "systemd", "fleet", "fleet_leader")


class LoopDuties:
    """Mixed into Master: the duties' bodies, on the master's state."""

    def _add_duties(self) -> None:
        """Each duty with its longest wait; its run returns a nearer deadline when it has one."""
        add = self.duties.add
        add("balance", TICK, self._balance)  # each supervisor's balance_cooldown
        add("slots", TICK, self._keep_slots)  # spawn when a back-off ends, roll, recycle, scheduler
        add("limits", TICK, self._check_limits)  # hard timeouts; memory_hard every 0.25 s under a job
        add("unblock", TICK, self._unblock)  # every 0.1 s while a worker must leave a blocking dequeue
        add("guard", TICK, self._guard_step)  # settle retries (2 s), intermediate sweep (5 s)
        add("stop_deadlines", TICK, self._enforce_stop_deadlines)
        add("master_memory", MEMORY_CHECK_EVERY, self._check_memory)
        add("clients", TICK, self._expire_clients)
        add("sample", SAMPLE_EVERY, self._sample)  # queue lengths, ages, rate limits; long waits
        add("metrics_save", SAVE_EVERY, self._save_metrics)
        add("snapshots", self.config.snapshot_interval, self._write_snapshots)
        add("redis_probe", TICK, self._probe_redis)  # PROBE_EVERY while up; 0.25 s / 2 s while away
        add("systemd", TICK, self._notify)  # READY, STATUS, drain time, watchdog
        add("cron", cron.IDLE_CHECK, self._run_cron)  # [cron.NAME], [maintenance]: at each occurrence
        add("fleet", self.config.fleet_heartbeat, self._fleet_beat)  # membership, desired state, fleet commands
        add("fleet_leader", self.config.fleet_heartbeat, self._fleet_leader)  # lease, grants, dead nodes
        started = time.monotonic()
        self.duties["snapshots"].next_due = started + self.config.snapshot_interval
        self.duties["master_memory"].next_due = started + MEMORY_CHECK_EVERY  # its size right after start is logged

    def _handle_command(self, request: dict, access: str) -> dict:
        """Every transport's entry to the command layer: after an action, wake what it made due."""
        reply = self._commands.handle(request, access)
        if request.get("cmd") not in READ_ONLY:
            self.duties.wake(*AFTER_ACTION)
        return reply

    def _balance(self, now: float) -> float | None:
        if self.stopping:
            return None
        sups = list(self.supervisors.values())
        self.redis_health.step(lambda: self.scaler.step(self.redis, sups, now, self._depths_for, self.config.slos))
        if any(s.last_balance == now for s in sups):
            self.duties.wake("slots")  # new targets: workers start (or retire) in this same pass
        waits = [s.last_balance + s.config.balance_cooldown - now for s in sups if not (s.draining or s.paused)]
        if not waits:
            return None
        soonest = min(waits)
        if soonest > 0:
            return soonest
        return None if self.redis_error else RETRY_BALANCE  # not balanced: Redis away, or the read failed

    def _depths_for(self, due: list[Supervisor]) -> tuple[dict[str, int], dict[str, float]]:
        """The sample (pending jobs, oldest job's age), read afresh when older than half the
        shortest cooldown due (balancing reacts to fresh depths) or missing a queue a pattern
        now matches."""
        now = time.monotonic()
        names = [q for sup in due for pool in sup.pools.values() for q in pool.queues]
        fresh_enough = min(s.config.balance_cooldown for s in due) / 2
        if self.observer.age(now) > fresh_enough or not self.observer.covers(names):
            self.observer.sample(self.redis, self.queues(), now, self.config.limits, self.config.redis_prefix)
            self.duties.wake("sample")  # long waits are judged on it; the next sample is due a period on
        return self.observer.pending, self.observer.ages

    def _keep_slots(self, now: float) -> float | None:
        if not self.stopping:
            for sup in self.supervisors.values():
                sup.tick(now)
            self.follow_queues(now)
            self._keep_scheduler(now)
        self.removed = [s for s in self.removed if s.processes()]
        self.duties.wake("unblock", "stop_deadlines", "systemd")  # a worker told to leave; READY may be due
        ends = [s.health.not_before - now for sup in self.supervisors.values() for s in sup.slots()
                if s.process is None]
        if self.scheduler.process is None and not self.stopping:
            ends.append(self.scheduler.health.not_before - now)
        if (web_due := self.web.keep(now)) is not None:  # the dashboard's process
            ends.append(web_due)
        return max(0.05, min(ends)) if ends else None

    def _workers(self) -> list[WorkerProcess]:
        return [p for p in self.children.values() if p.spec.kind == "worker"]

    def _check_limits(self, now: float) -> float | None:
        workers = self._workers()
        self.guard.check_limits(workers, self.config, now)
        return self.guard.memory_due_in(workers, now)  # memory_hard: every 0.25 s while a job runs under it

    def _unblock(self, now: float) -> float | None:
        if not self._waiting_workers():
            return None
        self.redis_health.step(self._unblock_waiting)
        return UNBLOCK_EVERY

    def _guard_step(self, now: float) -> None:
        self.redis_health.step(lambda: self.guard.step(self.redis, self.config, self.queues(), self._workers(), now))

    def _expire_clients(self, now: float) -> None:
        self.control.expire(now)
        if self.exporter:
            self.exporter.expire(now)

    def _sample(self, now: float) -> None:
        """The one read of queue lengths and ages, then the long waits judged on it."""
        def sample():
            if self.observer.age(now) >= SAMPLE_EVERY / 2:  # not just read for a balancing step
                self.observer.sample(self.redis, self.queues(), now, self.config.limits, self.config.redis_prefix)
            if self.breakers.step(self.redis, self.config, self.queues(), self.helpers):
                self._tell_held()  # breakers or an operator's queue pause changed what workers may take
        try:
            self.redis_health.step(sample)
        except Exception:
            return  # not a connection error: status and health say so on their own
        if not self.stopping and self.redis_error is None:  # a stop leaves queues unworked on purpose
            self.long_waits.check(self.observer.estimated_waits(self), self.observer.pending,
                                  self.config.wait_threshold, self._queue_owner, self.metrics,
                                  self.config.notify_command, self.config.webhook_url, now)

    def _tell_held(self) -> None:
        """Every worker learns which queues open breakers and operators hold now (dequeue.Gate).

        A busy worker reads it before it takes its next job. An idle one may be blocked in a
        BLMOVE on a queue now held, which would hand it the queue's next job: it is unblocked
        now, after the word is on its way, and again until it acknowledges the change (a worker
        that read its channel just before the word came may block once more)."""
        held = sorted(self.breakers.held)
        for proc in self._workers():
            proc.link.send(cmd="hold", queues=held, seq=self.breakers.seq)
        log.info("queues held by circuit breakers or operators", extra={
            "event": "breaker_held_queues", "queues": held})
        self._unblock_waiting()
        self.duties.wake("unblock")

    def breaker_rows(self) -> list[dict]:
        return self.breakers.rows(self.config)

    def force_breaker(self, name: str, action: str) -> None:
        self.breakers.force(self.redis, self.config, name, action)

    def pause_queue(self, queue: str, paused: bool) -> None:
        self.breakers.pause_queue(self.redis, self.config, queue, paused)

    def paused_queues(self) -> list[str]:
        return sorted(self.breakers.paused)

    def _queue_owner(self, queue: str) -> str:
        return next((s.name for s in self.supervisors.values() for p in s.pools.values() if queue in p.queues), "")

    def _save_metrics(self, now: float) -> None:
        """Restore the saved counters once, then save them when they changed (metricstore), and
        step the service levels ([slo]: this master's counts out, the fleet's window in,
        slostore): one round trip for both."""
        if self.store is None:
            self.store = MetricStore(metrics_key(self.config.redis_prefix, self.config.socket_path),
                                     self.config.redis_prefix)
        if not self.store.restored:
            self.redis_health.step(lambda: self.store.step(self.redis, self.metrics, now))
        self.redis_health.step(lambda: self._save_both(now))  # [slo] steps even if the restore could not

    def _save_both(self, now: float) -> None:
        cfg = self.config
        saving = self.store.restored and now >= self.store.save_due_at()
        if not cfg.slos:
            if saving:
                self.store.save(self.redis, self.metrics, now)  # a failed save is tried again, not an outage
            return
        with self.redis.pipeline(transaction=False) as pipe:
            done = self.store.stage(pipe, self.metrics, now) if saving else None
            self.slo.step(self.redis, cfg.redis_prefix, cfg.slos, self.queues(), self.observer.pending,
                          time.time(), pipe=pipe, before=done)

    def slo_rows(self) -> list[dict]:
        """Each served queue's service level over its window, as last read (no Redis call)."""
        return self.slo.report(self.config.slos, self.queues(), self.observer.pending, time.time())

    def _write_snapshots(self, now: float) -> float:
        cfg = self.config
        self.duties["snapshots"].period = cfg.snapshot_interval  # a reload may change it
        self.redis_health.step(lambda: self.snapshots.write(self.redis, cfg.redis_prefix, cfg.snapshot_interval,
                                                            cfg.snapshot_keep_hours, self._commands.queues()))
        return cfg.snapshot_interval

    def _run_cron(self, now: float) -> float | None:
        """Claim due [cron]/[maintenance] occurrences (once fleet-wide, supervise/cron.py)."""
        if self.cron is None or self.cron.config is not self.config:  # first run, or reloaded
            self.cron = cron.CronRunner.of(self.config)
        if not self.cron.entries or self.stopping:
            return None
        wait: list[float] = []
        try:
            self.redis_health.step(lambda: wait.append(self.cron.step(self.redis, time.time())))
        except Exception as exc:  # noqa: BLE001 - a bad entry must not take the master down
            log.error("cron step failed", extra={"event": "cron_failed", "error": f"{type(exc).__name__}: {exc}"})
            return cron.RETRY_AFTER_ERROR
        return wait[0] if wait else None

    def cron_schedule(self) -> list[dict]:
        """`horizonctl cron`: each entry's next occurrence and the fleet's last claim of it."""
        if self.cron is None or self.cron.config is not self.config:
            self.cron = cron.CronRunner.of(self.config)
        return self.cron.describe(self.redis, time.time())

    def _fleet_beat(self, now: float) -> float:
        self.duties["fleet"].period = self.config.fleet_heartbeat  # a reload may change it
        return self.fleet.beat(now)

    def _fleet_leader(self, now: float) -> float:
        """This node's fleet beat (lease, demand, grant) and, on the leader, grants and dead nodes."""
        self.leadership.configure(self.config.fleet_node, self.config.redis_prefix, self.config.fleet_heartbeat)
        self.duties["fleet_leader"].period = self.config.fleet_heartbeat  # a reload may change it
        sups = list(self.supervisors.values())
        self.redis_health.step(lambda: self.leadership.step(self.redis, sups, self._workers(), now))
        self.duties.wake("slots")  # a new grant (or an expired one) changes what the pools may run
        return self.leadership.heartbeat

    def _probe_redis(self, now: float) -> float:
        if self.redis_health.probe(self.redis, now):
            self._wake_redis_waiters()
            self.duties.wake(*AFTER_REDIS)  # the steps skipped while it was away run now
        return self.redis_health.due_in(now)

    def _notify(self, now: float) -> float | None:
        """systemd: READY once every worker is registered (or, while Redis is away, started and
        waiting for it: systemd must not time out the start), then STATUS, drain time, watchdog."""
        registered = self.redis_error is None
        if not self._ready_sent and not self.stopping and all(s.settled(registered)
                                                              for s in self.supervisors.values()):
            self._ready_sent = True
            self.notifier.ready()
        self.notifier.status(self._status_line())
        if self.stopping:
            deadlines = [d for p in self.children.values() if (d := p.stop_deadline(self.config.shutdown_grace))]
            self.notifier.extend_timeout(now, max(deadlines, default=now) - now)
        self.notifier.watchdog(now)
        return self.notifier.watchdog_due_in(now)

    def _status_line(self) -> str:
        procs = [p for p in self.children.values() if p.spec.kind == "worker"]
        busy = sum(1 for p in procs if p.state == "busy")
        paused = [s.name for s in self.supervisors.values() if s.paused]
        state = "stopping" if self.stopping else "paused" if paused and len(paused) == len(self.supervisors) \
            else "running"
        line = f"{state}: {len(self.supervisors)} supervisors, {busy}/{len(procs)} workers busy"
        if paused and state != "paused":
            line += f", paused: {', '.join(paused)}"
        return line + (f", REDIS UNREACHABLE ({self.redis_error})" if self.redis_error else ", redis ok")

    def _wake_redis_waiters(self) -> None:
        """Redis is back: children still waiting for it try now, not at the end of their back-off."""
        for proc in self.children.values():
            if proc.state == "starting":
                proc.link.send(cmd="redis")

    def _unblock_waiting(self) -> None:
        """Free idle workers told to pause or stop from their blocking dequeue.

        Repeated until each acts on it: a worker that checked its gate just before
        the word arrived may enter BLMOVE after the first CLIENT UNBLOCK.
        """
        names = {client_name(self.pid, p.pid) for p in self._waiting_workers()}
        if not names:
            return
        try:
            for client in self.redis.client_list(_type="normal"):
                if client.get("name") in names:
                    self.redis.client_unblock(int(client["id"]))
        except Exception as exc:
            log.warning("cannot unblock pausing workers", extra={"event": "unblock_failed", "error": str(exc)})
            self.redis_failed(exc)

    def _waiting_workers(self) -> list[WorkerProcess]:
        waiting = [p for sup in self.supervisors.values() for p in sup.awaiting_pause()]
        fresh = time.monotonic() - self.breakers.changed_at < HOLD_ACK_WINDOW
        return waiting + [p for p in self.children.values() if p.spec.kind == "worker" and (
            p.blocked_waiting or (fresh and p.holds_stale(self.breakers.seq)))]

    def _check_memory(self, now: float) -> None:
        if self.stopping:
            return
        rss = reexec.over_limit(self.config.memory_limit)
        if rss is not None:
            log.warning("master over its memory_limit: draining, then re-executing", extra={
                "event": "master_memory_exceeded", "rss_mb": rss // reexec.MB,
                "memory_limit_mb": self.config.memory_limit})
            self.reexec = True
            self.notifier.reloading()  # to systemd this is a reload: READY=1 comes from the new image
            self.stop(force=False, reason="memory_limit")

    def _enforce_stop_deadlines(self, now: float) -> float | None:
        """Kill a stopping worker past its deadline; returns the time to the next deadline."""
        waits = []
        for proc in self.children.values():
            deadline = proc.stop_deadline(self.config.shutdown_grace, shutting_down=self.stopping)
            if deadline is None or proc.kill_sent is not None:
                continue
            if now >= deadline and proc.link.fd >= 0:
                # reports are read in batches: a "busy" still unread would move the deadline out
                self.kids.read(proc)
                deadline = proc.stop_deadline(self.config.shutdown_grace, shutting_down=self.stopping)
                if deadline is None:
                    continue
            if now >= deadline:
                log.warning("worker did not stop in time; killing it", extra={
                    "event": "worker_killed", "pid": proc.pid, "job_id": proc.job_id})
                proc.kill(now)
            else:
                waits.append(deadline - now)
        return min(waits, default=None)
