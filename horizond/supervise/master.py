"""Master: the one loop that owns every supervisor, child process and the socket.

Signal handlers only record the signal; the loop (woken by the wakeup fd) does
the work, so no state is ever touched from inside a handler. Children are forked
directly from here: there is no middle process level to orphan or desynchronise.

The loop's periodic work is a table of duties (duties.py), each run when it
falls due; the loop sleeps until the nearest deadline. A worker's message
updates its state and wakes only the duty that cares (a finished job: metrics
only), so the loop's cost follows time, not the job rate.
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable

from redis import Redis

from horizond import appload, signals
from horizond.connection import redischeck
from horizond.connection.redisconn import RedisSpec, master_client
from horizond.connection.redishealth import RedisHealth
from horizond.control import views
from horizond.control.commands import CommandLayer
from horizond.control.daemon import QueueSample
from horizond.control.exporter import MetricsServer
from horizond.control.server import ControlServer, SocketError
from horizond.core import limits, restarts
from horizond.core.config import Config, SupervisorConfig
from horizond.fleet.member import FleetConflict, FleetMember
from horizond.fleet.node import Fleet
from horizond.observe.helpers import Helpers, KeptChild
from horizond.observe.longwaits import LongWaitNotifier
from horizond.observe.metrics import Metrics
from horizond.observe.metricstore import MetricStore
from horizond.observe.observer import Observer
from horizond.observe.slostore import SloStore
from horizond.observe.snapshots import SnapshotWriter
from horizond.supervise import recovery, reexec, reloading
from horizond.supervise.breaking import BreakerWatch
from horizond.supervise.children import Children
from horizond.supervise.cron import CronRunner
from horizond.supervise.duties import Duties
from horizond.supervise.guard import Guard
from horizond.supervise.masterduties import AFTER_ACTION, LoopDuties
from horizond.supervise.pool import Slot
from horizond.supervise.process import WorkerProcess
from horizond.supervise.scaling import Scaler
from horizond.supervise.supervisor import Supervisor, describe_exit
from horizond.supervise.systemd import Notifier
from horizond.worker.child import ChildSpec

log = logging.getLogger("horizond.master")


class Master(LoopDuties):
    def __init__(self, config: Config, load_config: Callable[[], Config], log_level: int = logging.INFO,
                 environ: dict | None = None):
        self.config = config
        self.environ = dict(environ if environ is not None else os.environ)  # before systemd's vars are dropped
        self.reexec = False
        self.load_config = load_config
        self.log_level = log_level
        self.pid = os.getpid()
        self.started = time.time()
        self.supervisors: dict[str, Supervisor] = {}
        self.removed: list[Supervisor] = []  # draining after a reload dropped them
        self.scheduler = Slot(0)
        self.signals: deque[int] = deque()
        self.selector = selectors.DefaultSelector()
        self.kids = Children(self.selector, self._job_finished, self._state_changed, self._on_child_exit)
        self.children = self.kids.procs  # pid -> WorkerProcess, every worker and the scheduler
        self.stopping = False
        self.paused = False  # `horizonctl pause` without a name: new supervisors start paused too
        self.redis = master_client(config)
        self.notifier = Notifier.from_environ()
        self._commands = CommandLayer(self)  # every transport below answers through it
        self.guard = Guard()
        self.scaler = Scaler()
        self.metrics = Metrics()
        self.observer = Observer()  # the one sampler of queue lengths and ages
        self.helpers = Helpers()  # [notify] command and webhook processes
        self.web = KeptChild("dashboard")  # `horizond web` while [web] listen is set
        self.long_waits = LongWaitNotifier(self.helpers)
        self.snapshots = SnapshotWriter()
        self.store: MetricStore | None = None
        self.slo = SloStore()  # [slo] levels: counted per job here, kept fleet-wide by the `slo` duty
        self.exporter = MetricsServer(config.metrics_listen, self.selector, self._commands.handle) \
            if config.metrics_listen else None
        self.control = ControlServer(config.socket_path, self.selector, self._handle_command,
                                     config.control_group, config.control_readers)
        self.cron: CronRunner | None = None  # built by its duty from the config in force
        self.breakers = BreakerWatch()  # [breakers]: sampled with the queues; held queues told to workers
        # the fleet's lease, budget grants and dead-node settling (fleet/node.py); membership is self.fleet
        self.leadership = Fleet(config.fleet_node, config.redis_prefix, config.fleet_heartbeat, self.pid,
                                recovery.settle_dead_node, restart=lambda: self.restart(None))
        self.duties = Duties()
        self.fleet = FleetMember(self, self._handle_command, lambda: self.duties.wake("fleet"))
        self._add_duties()
        self._wakeup: tuple[int, int] | None = None
        self._ready_sent = False
        self.redis_health = RedisHealth()

    # --- life cycle ---------------------------------------------------------------

    def run(self) -> int:
        self._setup()
        try:
            while True:
                self._handle_signals()
                self.helpers.reap(time.monotonic())
                self.kids.reap()
                now = time.monotonic()
                self.duties.run_due(now)
                if self.stopping and not self.children:
                    break
                ready = self.selector.select(self._timeout(self.kids.unmute()))
                registered = self.selector.get_map()
                for key, _ in ready:
                    if registered.get(key.fd) is key:  # not closed (or its fd reused) earlier in this batch
                        key.data()
        finally:
            self._teardown()
        if self.reexec:
            log.warning("re-executing after a drain", extra={"event": "master_reexec"})
            reexec.execute(self.environ, reexec.carried_state(self.paused, self.supervisors.values()))
        log.info("horizond stopped", extra={"event": "master_stopped"})
        return 0

    def _setup(self) -> None:
        appload.extend_sys_path(self.config.app_paths)
        appload.preload(self.config.preload)
        gc.freeze()  # what is loaded now stays out of the children's GC passes: their pages stay shared
        self.helpers.adopt_leftovers()
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._wakeup = (read_fd, write_fd)
        self.selector.register(read_fd, selectors.EVENT_READ, self._drain_wakeup)
        self.kids.open()
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        signals.install(self._record_signal)
        away = redischeck.at_startup(self.redis, self.config)  # a wrong password stops us here, before any fork
        if away is not None:
            self.redis_health.failed(away)  # known from the start: no step waits for it, READY does not either
        self.control.open()
        self.want_web()
        if self.exporter:
            try:
                self.exporter.open()
            except OSError as exc:
                self.control.close()
                raise SocketError(f"[metrics] listen = {self.config.metrics_listen!r}: cannot listen: "
                                  f"{exc.strerror or exc}") from None
        try:
            self.fleet.claim()  # a live master under the same node id: refuse to start
        except FleetConflict:
            self.control.close()
            if self.exporter:
                self.exporter.close()
            raise
        self.guard.recover_at_startup(self.redis, self.config, try_now=self.redis_error is None)
        carried = reexec.take_state()
        self.paused = bool(carried.get("paused_all"))
        for sup in self.config.supervisors:
            self.add_supervisor(sup, paused=self.paused or sup.name in carried.get("paused", ())
                                or self.fleet.wants_paused(sup.name))
            if (pin := carried.get("pinned", {}).get(sup.name)) is not None:
                self.supervisors[sup.name].pin(pin)
        if self.config.memory_limit and reexec.master_rss() > self.config.memory_limit * reexec.MB:
            log.error("[master] memory_limit is below the master's size right after start: it will re-execute "
                      "every time it is checked", extra={"event": "memory_limit_too_low",
                                                         "rss_mb": reexec.master_rss() // reexec.MB})
        log.info("horizond started", extra={
            "event": "master_started", "pid": self.pid, "config": self.config.source,
            "supervisors": [s.name for s in self.config.supervisors], "socket": self.config.socket_path})

    def _teardown(self) -> None:
        self.web.stop(wait=5.0)
        if self.store and self.redis_error is None:
            self.store.save(self.redis, self.metrics)  # counters carry over to the next master
        self.fleet.leave()
        if self.redis_error is None and not self.reexec:
            self.leadership.leave(self.redis)  # the leader steps down: a successor takes over at its next beat
        self.control.close()
        if self.exporter:
            self.exporter.close()
        signal.set_wakeup_fd(-1)
        if self._wakeup:
            self.selector.unregister(self._wakeup[0])
            for fd in self._wakeup:
                os.close(fd)
        self.selector.close()
        self.kids.close()

    def _record_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup[0], 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.popleft()
            if sig not in (signal.SIGCHLD, signal.SIGUSR1):
                self.duties.wake(*AFTER_ACTION)  # a stop or a reload
            if sig in (signal.SIGTERM, signal.SIGINT):
                # during a memory_limit drain the first stop signal is a first one: stop, not kill
                self.stop(force=self.stopping and not self.reexec, reason=signal.Signals(sig).name)
            elif sig == signal.SIGQUIT:
                self.stop(force=True, reason="SIGQUIT")
            elif sig == signal.SIGHUP:
                self.reload()
            elif sig == signal.SIGCHLD:
                self.kids.exited = True
            elif sig == signal.SIGUSR1:
                if signals.dump_due():  # a kill loop gets one dump a second
                    self._status_dump()
            else:
                signals.ignored(sig)

    def _status_dump(self) -> None:
        """SIGUSR1: what `horizonctl status` would say, as one log line (no Redis call)."""
        now = time.monotonic()
        log.info(self._status_line(), extra={
            "event": "status_dump", "uptime": round(time.time() - self.started, 1), "redis_error": self.redis_error,
            "scheduler_pid": self.scheduler.process.pid if self.scheduler.process else None,
            "unsettled_jobs": [u.job_id for u in self.guard.unsettled if u.job_id],
            "supervisors": [{k: v for k, v in views.supervisor(sup, now, {}).items() if k != "queues"}
                            for sup in [*self.supervisors.values(), *self.removed]]})

    def _timeout(self, now: float) -> float:
        """Sleep until the nearest duty's deadline, or the next Redis probe while Redis is away
        (a step that met a Redis error made the probe due sooner than it was planned)."""
        self.duties.due_by("redis_probe", now + self.redis_health.due_in(now))
        timeout = self.duties.time_to_next(now)
        muted = self.kids.muted_for(now)
        return timeout if muted is None else min(timeout, muted)

    @property
    def redis_error(self) -> str | None:
        """Why Redis is considered away (None: it answers)."""
        return self.redis_health.error

    def redis_failed(self, exc: Exception) -> None:
        self.redis_health.failed(exc)

    def set_paused(self, name: str | None, paused: bool) -> list[str]:
        targets = [self.supervisors[name]] if name else list(self.supervisors.values())
        if name is None:
            self.paused = paused
        for sup in targets:
            sup.set_paused(paused)
        log.info("paused" if paused else "continued", extra={
            "event": "paused" if paused else "continued", "supervisors": [s.name for s in targets]})
        self.redis_health.step(self._unblock_waiting)  # not while Redis is known away: the loop would wait
        self.duties.wake("unblock")
        return [s.name for s in targets]

    def restart(self, name: str | None) -> list[str]:
        """Roll the named supervisor's workers (every supervisor's without a name) onto new ones."""
        targets = [self.supervisors[name]] if name else list(self.supervisors.values())
        for sup in targets:
            sup.replace(sup.config, time.monotonic())
        return [s.name for s in targets]

    def reload(self) -> dict:
        """SIGHUP or `horizonctl reload`: re-read the config file, apply only the difference."""
        return reloading.reload(self)

    def add_supervisor(self, config: SupervisorConfig, paused: bool) -> Supervisor:
        sup = self.supervisors[config.name] = Supervisor(config, self._spawn_worker, paused)
        return sup

    def remove_supervisor(self, name: str, now: float) -> None:
        """Drop a supervisor (a reload removed it): its workers finish their jobs and leave."""
        sup = self.supervisors.pop(name)
        sup.drain(now)
        self.removed.append(sup)

    def want_web(self) -> None:
        """The dashboard runs as its own process while [web] listen is set (restarted when a reload
        changes what it reads); it re-reads the same config file, with the secrets it names."""
        cfg = self.config
        argv = [sys.executable, "-m", "horizond", "web", "--config", cfg.source, "--parent", str(self.pid)] \
            if cfg.web_listen and not cfg.embedded else None
        env = {k: v for k, v in self.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        token = (cfg.web_listen, cfg.web_base_path, cfg.web_users_file, cfg.web_proxy_user_header,
                 RedisSpec.of(cfg), cfg.redis_prefix, cfg.snapshot_interval, cfg.health, cfg.app_paths)
        self.web.want(argv, env, token)
        self.duties.wake("slots")

    def queue_sample(self) -> QueueSample:
        """The observer's latest look at the queues, for the command layer (no Redis call)."""
        observer = self.observer
        return QueueSample(pending=observer.pending, ages=observer.ages, estimated_waits=observer.estimated_waits(self),
                           rate_limits=observer.rate_limits, rate_limit_keys=observer.rate_limit_keys,
                           start_rates=observer.start_rates)

    def queues(self) -> tuple[str, ...]:
        """Every queue served now (patterns resolved), in supervisor order."""
        names: dict[str, None] = {}
        for sup in self.supervisors.values():
            for pool in sup.pools.values():
                names.update(dict.fromkeys(pool.queues))
        return tuple(names)

    def follow_queues(self, now: float) -> None:
        """The scheduler serves the queues being served: restart it when they change."""
        proc = self.scheduler.process
        if proc is not None and proc.stop_sent is None and set(proc.spec.queues) != set(self.queues()):
            proc.terminate(now)

    def _keep_scheduler(self, now: float) -> None:
        slot = self.scheduler
        if slot.process is None and slot.health.ready(now):
            spec = ChildSpec("scheduler", RedisSpec.of(self.config), self.pid, self.log_level, queues=self.queues())
            try:
                slot.process = self._fork(spec, 0)
            except OSError as exc:  # out of processes or fds: back off as a worker slot does
                slot.health = restarts.after_exit(slot.health, failed=True, lived=0.0, now=now,
                                                  how=f"fork failed: {exc}")
                log.error("cannot start the scheduler", extra={
                    "event": "spawn_failed", "child": "scheduler", "error": str(exc),
                    "restart_in": round(max(0.0, slot.health.not_before - now), 1)})
                return
            log.info("scheduler started", extra={"event": "scheduler_started", "pid": slot.process.pid})

    def _spawn_worker(self, sup: SupervisorConfig, generation: int, paused: bool,
                      queues: tuple[str, ...]) -> WorkerProcess:
        cfg = self.config
        spec = ChildSpec("worker", RedisSpec.of(cfg), self.pid, self.log_level, supervisor=sup, paused=paused,
                         queues=queues, prefix=cfg.redis_prefix, held=tuple(sorted(self.breakers.held)),
                         breakers=tuple(b for b in cfg.breakers if any(b.covers(q) for q in queues or sup.queues)),
                         limits=tuple(lim for lim in cfg.limits if any(limits.limit_for(cfg.limits, q) is lim
                                                                       for q in queues or sup.queues)))
        proc = self._fork(spec, generation)
        proc.held_seq = self.breakers.seq  # forked knowing the held queues of now (spec.held)
        return proc

    def _fork(self, spec: ChildSpec, generation: int) -> WorkerProcess:
        keep_out = [key.fd for key in self.selector.get_map().values()]
        keep_out += [self.selector.fileno()] + list(self._wakeup or ())
        if self.notifier.fileno() is not None:
            keep_out.append(self.notifier.fileno())
        return self.kids.fork(spec, generation, keep_out + _redis_fds(self.redis))

    def _job_finished(self, proc: WorkerProcess, job_id: str | None, finished: dict) -> None:
        self.leadership.member.finished_here(job_id)
        self.scaler.job_finished(finished["queue"], finished["runtime"])
        self.metrics.record(supervisor=proc.spec.supervisor.name, now=time.time(), **finished)
        self.slo.record(self.config.slos, finished["queue"], finished["ok"],
                        (finished["wait"] or 0.0) + (finished["runtime"] or 0.0), time.time())
        if self.store is not None:  # a first change after a quiet spell is saved at once
            self.duties.due_by("metrics_save", self.store.save_due_at())

    def _state_changed(self, proc: WorkerProcess, was: str) -> None:
        """Wake only the duties a worker's new state concerns; a job done is metrics only."""
        if was == "starting" or proc.state == "starting":
            self.duties.wake("systemd")  # READY waits for every worker to register
        if proc.state == "busy":
            if proc.spec.supervisor is not None and proc.spec.supervisor.memory_hard:
                self.duties.wake("limits")
        elif proc.stop_sent is not None or (proc.state == "idle" and (
                any(s.paused for s in self.supervisors.values()) or proc.holds_stale(self.breakers.seq))):
            # it must leave, or pause, from a blocking dequeue; or it went idle (into one, maybe on a
            # queue held since) before it read the change of the held queues sent while it was busy
            self.duties.wake("unblock", "stop_deadlines")

    def _on_child_exit(self, proc: WorkerProcess, status: int) -> None:
        now = time.monotonic()
        clean, how = describe_exit(status)
        self.duties.wake("slots", "systemd", "stop_deadlines")  # its slot refills (or backs off)
        if proc.spec.kind == "scheduler":
            self.scheduler.process = None
            self.scheduler.health = restarts.after_exit(
                self.scheduler.health, failed=not clean, lived=now - proc.started, now=now, how=how)
            return
        if not clean or proc.state == "busy":  # a job in hand is settled, whatever the exit code
            if not self.guard.settle(self.redis, proc, how, try_now=self.redis_error is None):
                self.redis_health.error = self.redis_error or "settling a dead worker's job failed"
        owner = self._owner(proc)
        if owner is not None:
            owner.on_exit(proc, status, now)

    def _owner(self, proc: WorkerProcess) -> Supervisor | None:
        for sup in [*self.supervisors.values(), *self.removed]:
            if sup.owns(proc):
                return sup
        return None

    # --- stop and reload ----------------------------------------------------------------

    def stop(self, force: bool, reason: str) -> None:
        now = time.monotonic()
        if self.reexec and reason != "memory_limit":
            self.reexec = False  # an operator's stop wins over the re-exec drain already under way
            self.notifier.stopping()
            log.info("stop requested during the memory_limit drain: stopping, not re-executing", extra={
                "event": "stop_requested", "reason": reason})
        if not self.stopping:
            self.stopping = True
            if not self.reexec:
                self.notifier.stopping()
            log.info("stopping: workers finish their jobs", extra={"event": "stop_requested", "reason": reason})
            for sup in [*self.supervisors.values(), *self.removed]:
                sup.drain(now, reason="shutdown")
            if self.scheduler.process:
                self.scheduler.process.terminate(now)
            self.web.want(None, {})
        if force:
            log.warning("stopping now: killing workers", extra={"event": "stop_forced", "reason": reason})
            for proc in self.children.values():
                proc.kill(now)
        self.duties.wake("slots", "unblock", "stop_deadlines", "systemd")

def _redis_fds(client: Redis) -> list[int]:
    """The master's own Redis sockets: a child must not hold (or write to) them."""
    pool = client.connection_pool
    conns = [*getattr(pool, "_available_connections", []), *getattr(pool, "_in_use_connections", [])]
    return [c._sock.fileno() for c in conns if getattr(c, "_sock", None) is not None]
