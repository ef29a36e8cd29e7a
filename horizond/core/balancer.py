"""Auto-balancing: how many worker processes each pool of a supervisor should run.

Pure: no I/O, no clock, no psutil. The daemon gathers the facts (queue lengths, measured
runtimes, live and busy workers, free memory) and applies the targets; this module only
decides, so every rule is tested exhaustively and replayed in scripts/bench_balancer.py.

The anchor is Laravel Horizon's auto-scaler: a pool's share of max_processes is its share of
the pending jobs ("size") or of pending x mean runtime ("time"). What its users complain about,
and what is done here instead:

- starts at max_processes (horizon#1295): a pool with no work wants its floor, and every move,
  the first one included, is at most max_shift.
- too slow, +-1 process per 3 s (horizon#658): a pool jumps to its desired count in steps of
  max_shift, not 1.
- oscillation on an empty system (horizon#750): an empty pool wants exactly its floor, and a
  pool shrinks only by *idle* workers and only when its desired count is strictly below the
  current one (hysteresis); two backlogged pools do not trade a busy worker over a one-worker
  wobble of their shares (dead band); with Options.cooldown, a backlog the current workers clear
  before the next step starts nobody. Inputs that do not change give targets that do not change.
- long-running jobs block rebalancing (horizon#1539): each pool is decided on its own; the only
  coupling is the supervisor's total cap, and a pool kept over its share by busy workers yields
  them (they stop after their job) when another pool needs the room. Within a pool, a worker
  stuck in a long job is not counted as room for the jobs queued behind it (see usable()).

"latency" (issue 19) sizes a pool by what its service level needs instead (core/latency.py):
the fewest workers that keep its predicted latency under max_latency; under the cap the pools
at risk of breaking their promise are served first, the nearest deadline first. Every rule
below holds for it too.

Floors versus the cap: min_processes is a floor per pool, max_processes caps the total. When
number_of_pools x min_processes > max_processes (a queue pattern matched many queues), the cap
wins: each floor becomes max_processes // pools, the remainder going to the first pools in
priority order (so with more pools than max_processes, the last pools get a floor of 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from horizond.core import latency

MODES = ("auto", "simple", "off")
STRATEGIES = ("time", "size", "latency")
UNKNOWN_RUNTIME = 1.0  # seconds, assumed when no queue of the supervisor has a measurement yet
MIN_RUNTIME = 0.001  # a queue with pending jobs never weighs zero, even with instant jobs


@dataclass(frozen=True)
class PoolStats:
    pending: int  # jobs waiting in the queue(s) this pool serves (LLEN)
    runtime: float | None  # mean seconds per job measured recently on this queue; None = unknown yet
    busy: int = 0  # workers of this pool currently running a job
    current: int = 0  # live workers in this pool now (count workers told to stop until they exit)
    running_for: tuple[float, ...] = ()  # seconds each busy worker's job has run so far; missing ones: just started
    # for auto_scaling_strategy = "latency" (issue 19); the other strategies ignore them:
    oldest_age: float = 0.0  # seconds the oldest pending job of the pool's queues has waited (0: none)
    arrival_rate: float = 0.0  # jobs per second recently enqueued to the pool's queues (smoothed, >= 0)
    max_latency: float | None = None  # the pool's service level ([slo] max_latency, tightest queue); None: none


@dataclass(frozen=True)
class Options:
    mode: str  # "auto" | "simple" | "off"
    strategy: str  # "time" | "size" | "latency" (core/latency.py)
    min_processes: int  # floor per pool (auto/simple); floor of the single pool (off)
    max_processes: int  # cap on the supervisor's total
    max_shift: int  # max change of one pool per step
    memory_ok: bool = True  # False: host is short of free memory -> never scale up (down is fine)
    cooldown: float = 0.0  # balance_cooldown; > 0: want no more workers than the jobs keep busy until the next step


@dataclass(frozen=True)
class Decision:
    targets: dict[str, int]  # pool key -> target process count
    reasons: dict[str, str]  # pool key -> short human reason
    desired: dict[str, int] = field(default_factory=dict)  # where each pool is heading (after the cap)


def balance(pools: Mapping[str, PoolStats], options: Options) -> Decision:
    """One balancing step: targets for every pool, each at most max_shift from its current count.

    Pool keys are in the supervisor's priority order (mapping order); in mode "off" there is
    exactly one pool. Raises ValueError on options the config validation should have refused.
    """
    _check(pools, options)
    keys = list(pools)
    if not keys:
        return Decision({}, {})
    floors = pool_floors(len(keys), options.min_processes, options.max_processes)
    floor = dict(zip(keys, floors, strict=True))
    served = None  # "latency": the pools with a service level, in the order they are served
    if options.mode == "off":
        desired, why, weight = _backlog_following(keys, pools, floor, options)
    elif options.mode == "simple":
        desired, why, weight = _even_split(keys, floor, options)
    elif options.strategy == "latency":
        desired, why, weight, served = _promises(keys, pools, floor, options)
    else:
        desired, why, weight = _shares(keys, pools, floor, options)
    if served is None:
        order = keys  # the order ups take the room in
        desired = fit_cap(keys, desired, floor, weight, options.max_processes)
    else:
        order = served + [k for k in keys if k not in served]
        desired = fit_in_order(order, served, desired, floor, weight, options.max_processes)
    targets, moves = _step(order, pools, desired, floor, options)
    reasons = {k: f"{why[k]} -> {desired[k]}{moves[k]}" for k in keys}
    return Decision({k: targets[k] for k in keys}, reasons, {k: desired[k] for k in keys})


def capped(targets: dict[str, int], min_processes: int, max_processes: int) -> dict[str, int]:
    """Pool targets (in priority order) cut to sum to at most max_processes, never below a floor:
    the same water-filling as a balancing step (fit_cap), the larger targets weighing more.

    (The shell needs it after new settings, and after a step whose targets count workers still
    finishing a job after a restart: without it the slots refilled behind them would leave the
    supervisor above its cap for good.)
    """
    keys = list(targets)
    floors = pool_floors(len(keys), min_processes, max_processes)
    floor = {k: min(f, targets[k]) for k, f in zip(keys, floors, strict=True)}  # cutting never raises one
    return fit_cap(keys, targets, floor, targets, max_processes)


def pool_floors(pools: int, min_processes: int, max_processes: int) -> list[int]:
    """Per-pool floors in priority order: min_processes each, unless that breaks the cap."""
    if pools * min_processes <= max_processes:
        return [min_processes] * pools
    base, extra = divmod(max_processes, pools)
    return [base + (i < extra) for i in range(pools)]


def _check(pools: Mapping[str, PoolStats], o: Options) -> None:
    if o.mode not in MODES or o.strategy not in STRATEGIES:
        raise ValueError(f"unknown balance mode or strategy: {o.mode!r}, {o.strategy!r}")
    if o.max_processes < 1 or o.max_shift < 1 or o.min_processes < 0:
        raise ValueError(f"bad limits: min {o.min_processes}, max {o.max_processes}, shift {o.max_shift}")
    if o.mode == "off" and len(pools) != 1:
        raise ValueError(f"mode 'off' runs one pool over all queues, got {len(pools)} pools")


def usable(pending: int, busy: int, runtime: float, cooldown: float, running_for: tuple[float, ...] = ()) -> int:
    """The most workers a pool can keep busy: one per job (pending + running).

    Given a cooldown, also no more than the work keeps busy until the next step (work / cooldown):
    a trickle that one worker clears in a second then asks for no second worker, which would only
    go idle and be stopped at the next step (churn, not throughput). A pending job is `runtime`
    seconds of work. A running one is at least that, and at least as long again as it has run
    already, up to the whole cooldown: a job that has run long tends to run on, so a worker stuck
    in a long job is no room for the jobs queued behind it (head-of-line blocking), while a
    worker just past a short job's mean still is.
    """
    jobs = pending + busy
    if cooldown <= 0 or jobs == 0:
        return jobs
    per_job = max(runtime, MIN_RUNTIME)
    ran = _ages(running_for, busy)
    work = pending * per_job + sum(min(cooldown, max(per_job, s)) for s in ran)
    work += (busy - len(ran)) * min(cooldown, per_job)
    return min(jobs, max(1, math.ceil(work / cooldown - 1e-9)))


def _ages(running_for: tuple[float, ...], busy: int) -> list[float]:
    """The ages of the `busy` oldest running jobs; an age that makes no sense (< 0, NaN) counts as 0."""
    return sorted((s if s > 0 and not math.isnan(s) else 0.0 for s in running_for), reverse=True)[:max(0, busy)]


def _long_running(p: PoolStats, o: Options) -> str:
    """For the reason: how many of the pool's jobs have run for a whole cooldown or more."""
    n = sum(1 for s in _ages(p.running_for, p.busy) if s >= o.cooldown > 0)
    return f", {n} running over {o.cooldown:g}s" if n else ""


def _backlog_following(keys, pools, floor, o):
    """off: one pool, sized to the jobs there are (waiting + running), within floor..max."""
    k = keys[0]
    p = pools[k]
    pending, busy = max(0, p.pending), max(0, p.busy)
    work = usable(pending, busy, p.runtime if _valid(p.runtime) else UNKNOWN_RUNTIME, o.cooldown, p.running_for)
    desired = min(o.max_processes, max(floor[k], work))
    return {k: desired}, {k: f"backlog {pending} + {busy} running{_long_running(p, o)}"}, {k: float(work)}


def _even_split(keys, floor, o):
    """simple: a fixed, even split of max_processes (the operator asked for no auto-scaling)."""
    shares = pool_floors(len(keys), o.max_processes, o.max_processes)  # divmod split, remainder first
    desired = {k: max(floor[k], s) for k, s in zip(keys, shares, strict=True)}
    return desired, {k: f"even split of {o.max_processes}" for k in keys}, {k: 0.0 for k in keys}


def _shares(keys, pools, floor, o):
    """auto: Horizon's share of max_processes, bounded by what the pool can use right now.

    A pool never wants more workers than it has jobs (pending + running): more would sit idle.
    (Horizon asks for its whole share even for 1 job; the surplus idles and is stopped again.)
    An unknown runtime is taken as the mean of the known ones (or 1 s), so "time" decides from
    the first minute instead of falling back to "size" until a snapshot exists.
    """
    runtime = _runtimes(keys, pools)
    weight = {}
    for k in keys:
        pending = max(0, pools[k].pending)
        weight[k] = float(pending) if o.strategy == "size" else pending * max(runtime[k], MIN_RUNTIME)
    total = sum(weight.values())
    desired, why = {}, {}
    for k in keys:
        p = pools[k]
        pending, busy = max(0, p.pending), max(0, p.busy)
        if pending == 0:
            desired[k] = floor[k]
            why[k] = f"no backlog, {busy} running" if busy else "no work, floor"
            continue
        share = weight[k] / total
        wanted = math.ceil(share * o.max_processes - 1e-9)
        can = usable(pending, busy, runtime[k], o.cooldown, p.running_for)
        desired[k] = max(floor[k], min(wanted, can))
        per_job = "" if o.strategy == "size" else f" x {runtime[k]:.3g}s{'' if _valid(p.runtime) else ' (est.)'}"
        why[k] = (f"backlog {pending} job{'s' * (pending != 1)}{per_job}, share {share:.0%} of {o.max_processes}"
                  + (f", can use {can}" if can < wanted else "") + _long_running(p, o))
    return desired, why, weight


def _runtimes(keys, pools) -> dict[str, float]:
    """Each pool's measured runtime; an unknown one is the mean of the known ones (or 1 s)."""
    known = [p.runtime for p in pools.values() if _valid(p.runtime)]
    guess = sum(known) / len(known) if known else UNKNOWN_RUNTIME
    return {k: pools[k].runtime if _valid(pools[k].runtime) else guess for k in keys}


def _promises(keys, pools, floor, o):
    """latency: a pool with a service level wants what its promise needs (core/latency.py), but
    no more workers than the jobs it has and the arrivals bring before the next step can keep
    busy; a pool without one is balanced like "time" in the room the others leave. Returns the
    pools with a service level too, in the order they are served (latency.serve_order)."""
    runtime = _runtimes(keys, pools)
    promised = [k for k in keys if _valid(pools[k].max_latency) and pools[k].max_latency > 0]
    desired, why, risk, slack = {}, {}, {}, {}
    for k in promised:
        p = pools[k]
        pending, busy, rate = max(0, p.pending), max(0, p.busy), latency.clean(p.arrival_rate)
        long = max(o.cooldown, latency.LONG * runtime[k]) if o.cooldown > 0 else math.inf  # as usable()
        stuck = sum(1 for s in _ages(p.running_for, p.busy) if s >= long)
        plan = latency.plan(pending, p.oldest_age, runtime[k], rate, p.max_latency, max(0, p.current), stuck,
                            o.max_shift, o.cooldown, o.max_processes)
        coming = pending + busy + math.ceil(rate * max(o.cooldown, runtime[k]) - 1e-9)
        desired[k] = max(floor[k], min(plan.need, coming, o.max_processes))
        risk[k] = plan.risk
        slack[k] = p.max_latency - (latency.clean(p.oldest_age) if pending else 0.0)
        why[k] = _promise_reason(p, o, plan, runtime[k], rate, stuck, coming)
    rest = [k for k in keys if k not in desired]
    weight = dict(risk)
    if rest:
        left = max(1, o.max_processes - sum(desired.values()))
        time = Options(o.mode, "time", o.min_processes, left, o.max_shift, o.memory_ok, o.cooldown)
        more, reasons, weights = _shares(rest, {k: pools[k] for k in rest}, floor, time)
        desired.update(more)
        weight.update(weights)
        why.update({k: f"no service level, as 'time': {reasons[k]}" for k in rest})
    return desired, why, weight, latency.serve_order(risk, slack)


def _promise_reason(p: PoolStats, o: Options, plan, runtime: float, rate: float, stuck: int, coming: int) -> str:
    """E.g. "at risk: predicted 42s > max 30s with 3, need 6 (arrivals 2.1/s x 1.2s, backlog 40, oldest 12s)"."""
    predicted = "unbounded" if math.isinf(plan.predicted) else f"{plan.predicted:.3g}s"
    head = "at risk: " if plan.risk > 1 else ""
    est = "" if _valid(p.runtime) else " (est.)"
    held = f", {stuck} in long jobs" if stuck else ""
    bound = f", can use {coming}" if coming < plan.need else ""
    return (f"{head}predicted {predicted} {'>' if plan.risk > 1 else '<='} max {p.max_latency:g}s with "
            f"{max(0, p.current)}{held}, need {plan.need} (arrivals {rate:.3g}/s x {runtime:.3g}s{est}, "
            f"backlog {max(0, p.pending)}, oldest {latency.clean(p.oldest_age):.3g}s){bound}")


def fit_in_order(order, served, desired, floor, weight, cap):
    """latency's cap: the pools with a service level get their whole want in the order they
    are served (the last is cut first), the others share what is left (fit_cap); none below a floor."""
    if sum(desired.values()) <= cap:
        return dict(desired)
    out = {k: floor[k] for k in order}
    room = cap - sum(out.values())
    for k in served:
        give = max(0, min(desired[k] - floor[k], room))
        out[k] += give
        room -= give
    rest = [k for k in order if k not in served]
    if rest:
        out.update(fit_cap(rest, {k: desired[k] for k in rest}, floor, weight, sum(out[k] for k in rest) + room))
    return out


def _valid(runtime: float | None) -> bool:
    return runtime is not None and runtime >= 0 and math.isfinite(runtime)


def fit_cap(keys, desired, floor, weight, cap):
    """Keep the total under the cap by cutting the largest pools first, never below a floor.

    Water-filling: find the highest level L such that every pool capped at L (but kept at its
    floor) fits; the units left over go to the heaviest of the pools cut at L, so a pool with
    more work never ends up with fewer workers than a lighter one with the same floor.
    """
    if sum(desired.values()) <= cap:
        return dict(desired)

    def fitted(level):
        return {k: max(floor[k], min(desired[k], level)) for k in keys}

    lo, hi = 0, max(desired.values())  # fits at lo (floors fit by construction), not at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if sum(fitted(mid).values()) <= cap else (lo, mid)
    out = fitted(lo)
    spare = cap - sum(out.values())
    cut = [k for k in keys if desired[k] > out[k] == lo]
    for k in sorted(cut, key=lambda k: -weight[k])[:spare]:  # stable sort: ties by priority
        out[k] += 1
    return out


def _step(keys, pools, desired, floor, o):
    """Move each pool toward its desired count by at most max_shift; downs first, then ups.

    Down: only idle workers are stopped (target >= busy), and only when desired < current, so a
    pool whose workers are all busy is never shrunk by its own decision; the idle ones leave at
    once, which makes room under the cap in this same step. Up: in priority order, within the
    room left under the cap, and not at all when free memory is low.
    Yield: when ups are short of room and a pool sits above its desired count only because its
    workers are busy, it is lowered (by what the others lack in all, at most max_shift): those workers
    stop after their current job. The room is handed out only once they have exited and the
    caller reports a lower current count, so the real process count never passes the cap.
    Dead band: a pool that still has a backlog keeps one busy worker over its desired count,
    unless a pool is below its floor. The shares of two backlogged queues wobble by one around a
    rounding edge from step to step (runtime means and queue lengths move); trading one busy
    worker back and forth would cost a stop and a start every few seconds, and it did in the bench.
    """
    cur = {k: max(0, pools[k].current) for k in keys}
    busy = {k: min(max(0, pools[k].busy), cur[k]) for k in keys}
    targets, moves = dict(cur), dict.fromkeys(keys, "")
    for k in keys:
        if desired[k] < cur[k]:
            targets[k] = max(cur[k] - o.max_shift, desired[k], busy[k])
            if targets[k] == cur[k]:
                moves[k] = f" (held: all {busy[k]} busy)"
            else:
                moves[k] = f" ({targets[k] - cur[k]}{', rest busy' if targets[k] == busy[k] > desired[k] else ''})"
    room = o.max_processes - sum(max(targets[k], busy[k]) for k in keys)
    # A floor is a guarantee, not a scaling decision: a pool below it (at start, after a crash)
    # gets there in one step, shift or not, free memory or not (within the cap).
    wants = {k: min(desired[k] - cur[k], max(o.max_shift, floor[k] - cur[k])) for k in keys if desired[k] > cur[k]}
    if not o.memory_ok:
        for k in wants:
            moves[k] = " (held: free memory low)"
        wants = {k: floor[k] - cur[k] for k in wants if cur[k] < floor[k]}
        if not wants:
            return targets, moves
    if o.memory_ok:  # with memory low nobody yields: only floors are filled, where there is room
        lack = sum(desired[k] - cur[k] for k in wants) - max(room, 0)  # the whole need: yielding takes a step
        strict = any(cur[k] < floor[k] for k in wants)
        for k in sorted(keys, key=lambda k: cur[k] - desired[k], reverse=True):
            band = 0 if strict or pools[k].pending <= 0 else 1
            give = min(lack, targets[k] - desired[k] - band, o.max_shift - (cur[k] - targets[k]))
            if give > 0:
                targets[k] -= give
                lack -= give
                moves[k] = f" ({targets[k] - cur[k]}, busy ones yield to other queues)"
    for k, want in wants.items():  # dict order = priority order
        up = max(0, min(want, room))
        room -= up
        targets[k] = cur[k] + up
        if not o.memory_ok:
            targets[k], moves[k] = cur[k] + up, f" (+{up} to the floor; free memory low)"
            continue
        limit = f", cap {o.max_processes} full" if up < want else (
            f", shift {o.max_shift}" if want < desired[k] - cur[k] else "")
        moves[k] = f" (+{up}{limit})" if up else f" (held: cap {o.max_processes} full)"
    return targets, moves
