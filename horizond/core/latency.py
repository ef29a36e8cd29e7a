"""What a queue's promise asks of its pool: auto_scaling_strategy = "latency" (issue 19). Pure.

Horizon sizes a pool by its share of the backlog; a queue's users feel its latency (enqueue to
finish) instead. So a pool with a service level ([slo] max_latency) gets the fewest workers that
finish its jobs within HEADROOM x max_latency (the runtime and the rates are means; jobs vary):

- the backlog: FIFO, the newest pending job has waited at most as long as the oldest, and runs
  after every job before it. Counting every pending job as old as the oldest is pessimistic for
  a trickle and exact for a burst, which is where the promise is at stake. So the backlog and
  what arrives behind it meanwhile (arrival_rate x the time left) must be done, in worker-
  seconds, in the time the oldest job has left, less its own run. Every pending job arrived
  within the oldest one's age, so jobs arrive at least pending / age a second (age taken as one
  step at least): the smoothed rate lags a storm by tens of seconds, and a pool that may grow by
  one worker a step never catches up a step lost to that lag (in scripts/bench_slo.py it cost
  300-340 late jobs on two of three recorded days). A batch enqueued at once is taken as a
  stream too, but only while it is young: the implied rate falls as its oldest job ages;
- the pool gets there at most `shift` workers per `cooldown` (balance_max_shift): a count the
  pool would reach only after that deadline does not save it, so the need is the count whose
  ramp does the work in time, and with none, as many as the rules allow (the jobs are late
  whatever is done: the sooner they are done, the fewer follow them);
- with no backlog, the arrivals keep arrival_rate x runtime workers busy (Little's law), but the
  pool keeps only as many as cannot wait for the next step (idle_need): the few jobs that queue
  meanwhile are still done in time by one step's growth. Keeping all of them (and any more
  headroom) bought no fewer late jobs in scripts/bench_slo.py, only process-seconds.

A job that has run LONG times the mean runtime (and a whole cooldown) holds its worker: the
jobs behind it get another one (horizon#1539). When max_processes cannot satisfy every pool, the
pools at risk (predicted latency with the current workers over max_latency) are served first,
earliest deadline first (serve_order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MIN_RUNTIME = 0.001  # seconds: instant jobs still take a worker
BIG = 1e12  # seconds or jobs per second: more than any queue will see
LONG = 3.0  # a job that has run this many mean runtimes (and a cooldown) holds its worker: no room
HEADROOM = 0.7  # aim for this share of max_latency: runtimes and rates are means, jobs vary, rates lag
LOOKAHEAD = 60.0  # seconds: the furthest a momentary arrival rate is projected (the balancer looks again each step)


@dataclass(frozen=True)
class Plan:
    need: int  # the fewest workers that keep the predictions within HEADROOM x max_latency
    steady: float  # arrival_rate x runtime: workers the arrivals keep busy
    predicted: float  # seconds, enqueue to finish, with the current workers (inf: with none)
    risk: float  # predicted / max_latency: > 1 means the promise is being broken


def plan(pending: int, oldest_age: float, runtime: float, arrival_rate: float, max_latency: float,
         current: int, stuck: int = 0, shift: int = 0, cooldown: float = 0.0, most: int | None = None) -> Plan:
    """The pool's need and its risk with `current` workers, of which `stuck` (in a long job) do
    not count as room for the jobs queued behind them; shift, cooldown and most as latency_need."""
    pending, age = max(0, pending), clean(oldest_age)
    runtime, rate = max(MIN_RUNTIME, runtime), clean(arrival_rate)
    stuck = min(max(0, stuck), max(0, current))
    room = max(0, current - stuck)
    need = latency_need(pending, age, runtime, rate, max_latency, room, shift, cooldown,
                        None if most is None else max(0, most - stuck))
    need = need + stuck if need else 0
    predicted = predicted_latency(pending, age, runtime, rate, room, max_latency)
    return Plan(need, rate * runtime, predicted, predicted / max_latency if max_latency > 0 else math.inf)


def latency_need(pending: int, oldest_age: float, runtime: float | None, arrival_rate: float,
                 max_latency: float, current: int = 0, shift: int = 0, cooldown: float = 0.0,
                 most: int | None = None) -> int:
    """Workers a queue needs so its jobs finish within HEADROOM x max_latency of being enqueued:
    the larger of what the arrivals need to be served at UTILISATION, and what the backlog needs
    in the time its oldest job has left. The pool grows from `current` by at most `shift` workers
    every `cooldown` seconds (0: at once), so a count reached only after the backlog's deadline
    does not count: the need is then higher, to get there sooner. When no count up to `most`
    (default: one per pending job) makes it, the backlog is late whatever is done: the need is
    `most`, to clear it as fast as the rules allow. 0 only without work."""
    pending, age, rate = max(0, pending), clean(oldest_age), clean(arrival_rate)
    if pending == 0 and rate == 0:
        return 0
    runtime = max(MIN_RUNTIME, runtime if runtime is not None and math.isfinite(runtime) else 1.0)
    steady = math.ceil(min(rate * runtime, BIG) - 1e-9)
    if pending == 0:
        return idle_need(rate, runtime, max_latency, steady, shift, cooldown)
    most = pending if most is None else max(1, most)
    rate = max(rate, pending / max(age, cooldown, 1.0))  # the backlog came within `age`: at least this fast

    def enough(n: int) -> bool:
        return in_time(n, pending, age, runtime, rate, max_latency, current, shift, cooldown)

    if not enough(most):
        return max(steady, most)
    low, high = 0, most  # not enough at low (0 workers), enough at high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return max(1, steady, high)


def in_time(workers: int, pending: int, age: float, runtime: float, rate: float, max_latency: float,
            current: int, shift: int, cooldown: float) -> bool:
    """Does a pool aiming at `workers` (from `current`, as capacity() grows it) finish the backlog
    and the arrivals behind it within HEADROOM x max_latency? FIFO: the newest pending job is
    taken as old as the oldest, and runs after every job before it."""
    horizon = HEADROOM * max_latency - age - runtime
    rounds = math.floor(horizon / runtime + 1e-9) if horizon > 0 else 0
    work = (pending + rate * max(0.0, horizon)) * runtime
    return (rounds >= 1 and math.ceil(pending / workers) <= rounds
            and capacity(workers, current, shift, cooldown, horizon) >= work - 1e-9)


def idle_need(rate: float, runtime: float, max_latency: float, steady: int, shift: int, cooldown: float) -> int:
    """No backlog: the arrivals keep `steady` workers busy (Little's law), but the balancer looks
    again within `cooldown` seconds and may then add `shift`. So the pool keeps only the fewest
    workers (at least 1) whose shortfall meanwhile leaves a backlog that one such step still gets
    done within the promise; all `steady` when the promise is too tight to wait for a step.
    Keeping `steady` for a loose promise bought no fewer late jobs in scripts/bench_slo.py (two
    traces, two layouts), only idle workers: after a storm the smoothed rate stays high for
    minutes, and so did the pool."""
    if shift <= 0 or cooldown <= 0 or steady <= 1:
        return max(1, steady)

    def waits(n: int) -> bool:
        built = math.ceil(max(0.0, rate - n / runtime) * cooldown - 1e-9)
        return built == 0 or in_time(n + shift, built, cooldown, runtime, rate, max_latency, n, shift, cooldown)

    low, high = 0, steady  # the steady count always waits (nothing builds up)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if waits(mid) else (mid, high)
    return high


def capacity(workers: int, current: int, shift: int, cooldown: float, horizon: float) -> float:
    """Worker-seconds a pool aiming at `workers` gives within `horizon` seconds, growing from
    `current` by `shift` each `cooldown` (its first step now); shrinking is at once."""
    if horizon <= 0:
        return 0.0
    if workers <= current or shift <= 0 or cooldown <= 0:
        return workers * horizon
    total, t, count = 0.0, 0.0, current
    while t < horizon and count < workers:
        count = min(workers, count + shift)
        total += count * min(cooldown, horizon - t)
        t += cooldown
    return total + workers * max(0.0, horizon - t)


def predicted_latency(pending: int, oldest_age: float, runtime: float | None, arrival_rate: float,
                      workers: int, max_latency: float = 0.0) -> float:
    """Seconds from enqueue to finish for the worst job in sight with `workers` at work (inf with
    none): the newest pending job (as old as the oldest, after ceil(pending / workers) rounds,
    then its own run), or, while the arrivals outrun the workers, the job arriving max_latency
    (at most LOOKAHEAD) from now behind the queue grown by then (a fluid estimate). The cap: a
    rate measured now says little about an hour from now, and projected over a long promise, the
    rate a burst leaves behind made a queue with an hour's promise look more at risk than one with
    3 s, which then got fewer workers (tests/test_balancing_latency.py)."""
    pending, age, rate = max(0, pending), clean(oldest_age), clean(arrival_rate)
    runtime = max(MIN_RUNTIME, runtime if runtime is not None and math.isfinite(runtime) else 1.0)
    if workers <= 0:
        return math.inf if pending or rate else runtime
    backlog = age + math.ceil(pending / workers) * runtime if pending else 0.0
    growth = max(0.0, rate - workers / runtime) * min(max(0.0, max_latency), LOOKAHEAD)
    return max(backlog, (pending + growth) * runtime / workers) + runtime


def serve_order(risks: Mapping[str, float], slack: Mapping[str, float]) -> list[str]:
    """Pools in the order they are served when the cap cannot satisfy all: first those at risk
    (risk > 1), the one whose oldest job has the least time left (`slack`: max_latency less its
    age) first; then the others, the riskiest first; ties in the given (priority) order.

    Earliest deadline first, not the highest risk: risk is predicted with the *current* workers,
    so a pool short of a few (60 s allowed, 14 jobs of 2 s on 1 worker: "95 s") outranked a storm
    on a 30 s queue 25 s in, took 3 of its workers and made its jobs late, while its own 46 s to
    spare would have covered the wait for the next step (scripts/bench_slo.py check, layout
    "shared-20": with the order by risk, 162 more late jobs than "time" on day 19; with this one,
    41 fewer, and fewer on days 20 and 21 too)."""
    order = list(risks)
    return sorted(order, key=lambda key: (risks[key] <= 1, slack[key] if risks[key] > 1 else -risks[key],
                                          order.index(key)))


def clean(value: float) -> float:
    """Ages and rates from the shell: below 0 or NaN mean nothing measured (0); no figure is
    taken as larger than BIG (an infinite age is just very late)."""
    return min(value, BIG) if value > 0 else 0.0
