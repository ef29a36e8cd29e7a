"""Replay a trace through the real balance(), one supervisor at a time (scripts/bench_slo.py).

A discrete-event simulation, no Redis and no processes, of what the daemon does with each
supervisor of a config: workers take jobs FIFO (a pool over several queues, balance "off",
takes them in the queues' order) the moment they are free; a new worker is ready BOOT seconds
after it is started; a worker told to stop leaves at once when idle, or after its job; every
balance_cooldown seconds the balancer decides from the PoolStats the daemon would gather:
- pending: the queue lengths; busy, current (stopping workers count until they exit), and how
  long each running job has run;
- runtime: the mean of finished jobs' runtimes, the daemon's moving average (weight 0.2);
- oldest_age: how long the oldest pending job of the pool has waited;
- arrival_rate: core/arrivals.py's rate(), fed at each step as the daemon feeds it: the jobs in
  the system (pending + running) and the running total of finished ones;
- max_latency: the tightest [slo] max_latency of the pool's queues (None: no service level).
Supervisors share nothing but the host, so each is replayed alone; memory is never short.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

from horizond.core import arrivals, slo
from horizond.core.balancer import Options, PoolStats, balance, pool_floors
from horizond.core.config import SupervisorConfig

BOOT = 0.5  # seconds from start to taking jobs (fork and import; the daemon measures ~0.3-0.5 s)
RUNTIME_WEIGHT = 0.2  # the daemon's moving average of runtimes (supervise/scaling.py)
DRAIN = 1800  # at most this many seconds replayed after `end`, until every backlog is done
SLICE = 60  # seconds per SLO slice, as core/slo.py cuts a window of up to an hour


@dataclass(eq=False)
class Worker:
    pool: str
    born: float
    ready: float
    job: tuple | None = None  # (arrival, runtime, queue, started) of the running job
    stopping: bool = False


@dataclass
class Pool:
    queues: tuple[str, ...]
    workers: list[Worker] = field(default_factory=list)
    rate: float = 0.0  # the smoothed arrival rate (core/arrivals.py)
    point: arrivals.Point | None = None  # the last step's (time, in system, finished)
    done: int = 0  # jobs of the pool finished so far
    last_move: int = 0


@dataclass
class Outcome:
    """What one supervisor did with one strategy."""

    latencies: dict[str, list[float]]  # per queue, every finished job
    finished: dict[str, list[float]]  # per queue, when each job finished (same order)
    process_seconds: float = 0.0
    scaling_steps: int = 0
    steps: int = 0
    reversals: int = 0
    starts: int = 0
    peak: int = 0


def replay(sup: SupervisorConfig, jobs: list[tuple[float, str, float]], strategy: str,
           slos: tuple[slo.SloTarget, ...], end: float) -> Outcome:
    """Replay the jobs of this supervisor's queues (time, queue, runtime) until `end` + DRAIN."""
    queues = sup.queues
    mine = [j for j in jobs if j[1] in queues]
    layout = {"*": queues} if sup.balance == "off" else {q: (q,) for q in queues}
    pools = {k: Pool(qs) for k, qs in layout.items()}
    owner = {q: k for k, qs in layout.items() for q in qs}
    limit = {k: _tightest(qs, slos) for k, qs in layout.items()}
    waiting = {q: deque() for q in queues}
    runtime: dict[str, float] = {}
    out = Outcome({q: [] for q in queues}, {q: [] for q in queues})
    options = Options(sup.balance, "time" if strategy in REFERENCES else strategy, sup.min_processes,
                      sup.max_processes, sup.balance_max_shift, cooldown=sup.balance_cooldown)
    free: list[tuple[float, int, Worker]] = []  # (when, seq, worker): ready after boot or after a job
    # idle workers per pool, in the order they became idle: a dict, not a set, whose order would
    # follow memory addresses and change a figure or two from one run to the next
    idle: dict[str, dict[Worker, None]] = {k: {} for k in pools}
    seq = itertools.count()  # ties in `free` go by order of scheduling, never by worker
    nxt = 0

    def take(w: Worker, now: float) -> None:
        pool = pools[w.pool]
        q = next((q for q in pool.queues if waiting[q]), None)
        if q is None or w.stopping:
            if w.stopping:
                pool.workers.remove(w)
                out.process_seconds += now - w.born
            else:
                idle[w.pool][w] = None
            return
        arrival, run = waiting[q].popleft()
        w.job = (arrival, run, q, now)
        heapq.heappush(free, (now + run, next(seq), w))

    def advance(until: float) -> None:
        nonlocal nxt
        while True:
            t_job = mine[nxt][0] if nxt < len(mine) else math.inf
            t_free = free[0][0] if free else math.inf
            if min(t_job, t_free) > until:
                return
            if t_free <= t_job:
                now, _, w = heapq.heappop(free)
                if w.job is not None:
                    arrival, run, q, _ = w.job
                    out.latencies[q].append(now - arrival)
                    out.finished[q].append(now)
                    old = runtime.get(q)
                    runtime[q] = run if old is None else old + RUNTIME_WEIGHT * (run - old)
                    w.job = None
                    pools[w.pool].done += 1
                take(w, now)
            else:
                t, q, run = mine[nxt]
                nxt += 1
                waiting[q].append((t, run))
                k = owner[q]
                if idle[k]:
                    w = idle[k].popitem()[0]
                    take(w, t)

    step = sup.balance_cooldown
    now = 0.0
    while now <= end + DRAIN:
        advance(now)
        if now >= end and nxt == len(mine) and not any(waiting.values()) and not any(
                w.job for p in pools.values() for w in p.workers):
            break  # drained: the real run stops measuring here too
        stats = {k: _stats(p, waiting, runtime, limit[k], now) for k, p in pools.items()}
        targets = (reference(strategy, stats, sup) if strategy in REFERENCES and sup.balance != "off"
                   else balance(stats, options).targets)
        changed = False
        for k, p in pools.items():
            move = _apply(p, k, targets[k], now, idle[k], free, seq, out)
            if move:
                changed = True
                if p.last_move and (move > 0) != (p.last_move > 0):
                    out.reversals += 1
                p.last_move = move
        out.scaling_steps += changed
        out.steps += 1
        out.peak = max(out.peak, sum(len(p.workers) for p in pools.values()))
        now += step
    for p in pools.values():
        out.process_seconds += sum(now - w.born for w in p.workers)
    for q in queues:  # never finished: at least as late as the replay is long
        for arrival, _ in waiting[q]:
            out.latencies[q].append(now - arrival)
            out.finished[q].append(now)
    return out


REFERENCES = ("greedy", "max")  # not strategies: yardsticks for them (scripts/bench_slo.py bounds)


def reference(name: str, stats: dict[str, PoolStats], sup: SupervisorConfig) -> dict[str, int]:
    """Targets of a yardstick, not of the balancer:
    - "max": every pool at its supervisor's max_processes all day, ready before any job comes
      (each pool as many, even where they share a cap): the late jobs no balancer avoids within
      the caps at any cost in process-seconds;
    - "greedy": the fastest ramp the rules allow, on any backlog: a pool without pending jobs
      shrinks by balance_max_shift towards its floor (the balancer's floors; never below its busy
      workers), and the room left under the cap goes to the pools with a backlog, in order, each
      growing by the shift at most. On a supervisor of one pool no strategy that starts from the
      same floor puts more workers on a backlog sooner; with several, the room goes in pool order.
    A supervisor with balance "off" has no strategy: it is replayed with balance() under both."""
    if name == "max":
        return {k: sup.max_processes for k in stats}
    shift = sup.balance_max_shift
    floor = dict(zip(stats, pool_floors(len(stats), sup.min_processes, sup.max_processes), strict=True))
    out = {k: max(floor[k], min(s.current, max(s.busy, s.current - shift))) if not s.pending
           else max(floor[k], s.current) for k, s in stats.items()}  # no backlog: down a shift, busy ones stay
    # the room is what the live workers leave now: a busy or booting worker told to stop is still
    # there until its job ends (as the balancer counts it)
    room = sup.max_processes - sum(max(out[k], s.current) for k, s in stats.items())
    for k, s in stats.items():  # to the backlogs, in order, a shift each at most
        if s.pending:
            more = max(0, min(shift, room))
            out[k] += more
            room -= more
    return out


def _stats(p: Pool, waiting: dict, runtime: dict, max_latency: float | None, now: float) -> PoolStats:
    pending = sum(len(waiting[q]) for q in p.queues)
    heads = [waiting[q][0][0] for q in p.queues if waiting[q]]
    known = [runtime[q] for q in p.queues if q in runtime]
    busy = [w for w in p.workers if w.job is not None]
    point = arrivals.Point(now, pending + len(busy), p.done)
    p.rate, p.point = arrivals.rate(p.rate, p.point, point), point
    return PoolStats(pending=pending, runtime=sum(known) / len(known) if known else None, busy=len(busy),
                     current=len(p.workers), running_for=tuple(now - w.job[3] for w in busy),
                     oldest_age=now - min(heads) if heads else 0.0,
                     arrival_rate=p.rate, max_latency=max_latency)


def _apply(p: Pool, key: str, target: int, now: float, idle: dict, free: list, seq, out: Outcome) -> int:
    """Start workers up to the target or stop the surplus, idle ones first (bench_balancer's apply)."""
    live = len(p.workers)
    if target > live:
        for _ in range(target - live):
            w = Worker(key, now, now + BOOT)
            p.workers.append(w)
            heapq.heappush(free, (w.ready, next(seq), w))
        out.starts += target - live
        return target - live
    surplus = live - target - sum(w.stopping for w in p.workers)
    stopped = 0
    for w in sorted((w for w in p.workers if not w.stopping), key=lambda w: (w.job is not None, w not in idle)):
        if stopped >= surplus:
            break
        w.stopping = True
        stopped += 1
        if w in idle:  # idle: leaves now; busy or still booting: when its job ends or it is ready
            del idle[w]
            p.workers.remove(w)
            out.process_seconds += now - w.born
    return -stopped


def _tightest(queues: tuple[str, ...], slos: tuple[slo.SloTarget, ...]) -> float | None:
    limits = [t.max_latency for q in queues if (t := slo.slo_for(slos, q)) is not None]
    return min(limits) if limits else None
