"""The balancer: a pure function (stats, options) -> targets, tested rule by rule and by properties."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from horizond.core.balancer import Decision, Options, PoolStats, balance, pool_floors, usable

ISSUE = Options(mode="auto", strategy="size", min_processes=1, max_processes=8, max_shift=2)


def stats(current: dict[str, int], pending: dict[str, int] | None = None, busy: dict[str, int] | None = None,
          runtime: dict[str, float | None] | None = None) -> dict[str, PoolStats]:
    pending, busy, runtime = pending or {}, busy or {}, runtime or {}
    return {k: PoolStats(pending.get(k, 0), runtime.get(k), busy.get(k, 0), c) for k, c in current.items()}


def replay(current, options, steps, **kw) -> list[Decision]:
    """Apply the decisions as the daemon would: next step's current = this step's targets."""
    out = []
    for _ in range(steps):
        decision = balance(stats(current, **kw), options)
        out.append(decision)
        current = decision.targets
    return out


def totals(decisions):
    return [sum(d.targets.values()) for d in decisions]


# --- the issue's scenario -------------------------------------------------------------------


def test_issue_scenario_idle_backlog_drain():
    idle = replay({"a": 0, "b": 0}, ISSUE, 3)
    assert idle[0].targets == {"a": 1, "b": 1}  # starts at the floors, not at max
    assert all(d.targets == {"a": 1, "b": 1} for d in idle)

    burst = replay({"a": 1, "b": 1}, ISSUE, 5, pending={"a": 1500})
    assert [d.targets["a"] for d in burst] == [3, 5, 7, 7, 7]  # 7 on a within 3 steps
    assert all(d.targets["b"] == 1 for d in burst)
    assert max(totals(burst)) <= 8
    assert burst[0].reasons["a"] == "backlog 1500 jobs, share 100% of 8 -> 7 (+2, shift 2)"

    drain = replay({"a": 7, "b": 1}, ISSUE, 5)
    assert [d.targets["a"] for d in drain] == [5, 3, 1, 1, 1]
    assert drain[-1].targets == {"a": 1, "b": 1}


def test_issue_scenario_time_gives_the_slower_queue_the_larger_share():
    time = Options("auto", "time", 1, 8, 2)
    steps = replay({"a": 1, "b": 1}, time, 5, pending={"a": 300, "b": 300}, runtime={"a": 1.0, "b": 3.0})
    assert steps[-1].targets == {"a": 2, "b": 6}  # 25% / 75% of 8, as Horizon's formula says
    assert "x 3s, share 75% of 8 -> 6" in steps[-1].reasons["b"]
    # the same load by size splits evenly
    size = replay({"a": 1, "b": 1}, ISSUE, 5, pending={"a": 300, "b": 300}, runtime={"a": 1.0, "b": 3.0})
    assert size[-1].targets == {"a": 4, "b": 4}


def test_time_estimates_an_unknown_runtime_from_the_other_queues():
    time = Options("auto", "time", 1, 8, 8)
    d = balance(stats({"a": 1, "b": 1}, pending={"a": 100, "b": 100}, runtime={"a": 4.0}), time)
    assert d.desired == {"a": 4, "b": 4}  # b is assumed to take 4 s like a
    assert "(est.)" in d.reasons["b"] and "(est.)" not in d.reasons["a"]
    d = balance(stats({"a": 1, "b": 1}, pending={"a": 100, "b": 300}), time)  # nothing known: 1 s each
    assert d.desired == {"a": 2, "b": 6}


def test_zero_runtime_still_counts_the_backlog():
    time = Options("auto", "time", 0, 8, 8)
    d = balance(stats({"a": 0, "b": 0}, pending={"a": 50}, runtime={"a": 0.0, "b": 0.0}), time)
    assert d.desired == {"a": 8, "b": 0}


def test_cooldown_asks_only_for_workers_the_backlog_keeps_busy_until_the_next_step():
    trickle = stats({"a": 1, "b": 1}, pending={"a": 1}, busy={"a": 1}, runtime={"a": 0.4})
    assert balance(trickle, ISSUE).desired["a"] == 2  # without: one worker per job
    with_cooldown = Options("auto", "size", 1, 8, 2, cooldown=3.0)
    assert balance(trickle, with_cooldown).desired["a"] == 1  # 2 x 0.4 s of work fits in 3 s
    slow = stats({"a": 1, "b": 1}, pending={"a": 10}, busy={"a": 1}, runtime={"a": 2.0})
    assert balance(slow, with_cooldown).desired["a"] == 7  # ceil(11 x 2 / 3) = 8, cap leaves 7
    # the issue's scenario, unknown runtime (1 s assumed), cooldown 1 s: unchanged
    issue = Options("auto", "size", 1, 8, 2, cooldown=1.0)
    assert [d.targets["a"] for d in replay({"a": 1, "b": 1}, issue, 3, pending={"a": 1500})] == [3, 5, 7]
    off = Options("off", "size", 1, 8, 2, cooldown=3.0)
    assert balance(stats({"*": 1}, pending={"*": 4}, runtime={"*": 0.5}), off).desired == {"*": 1}


def test_jobs_behind_a_worker_stuck_in_a_long_job_get_a_worker():
    # issue 13, item 11: one worker 15 s into a long job, 2 short jobs queued behind it, room up to 8
    o = Options("auto", "time", 1, 8, 2, cooldown=3.0)
    stuck = {"a": PoolStats(2, 0.05, busy=1, current=1, running_for=(15.0,))}
    d = balance(stuck, o)
    assert d.desired == {"a": 2} and d.targets == {"a": 2}
    assert d.reasons["a"] == "backlog 2 jobs x 0.05s, share 100% of 8, can use 2, 1 running over 3s -> 2 (+1)"
    off = Options("off", "size", 1, 8, 2, cooldown=3.0)
    assert balance({"*": PoolStats(2, 0.05, 1, 1, (15.0,))}, off).targets == {"*": 2}
    # a job just past a short mean is no reason for a second worker: the trickle rule still holds
    trickle = {"a": PoolStats(1, 0.4, busy=1, current=1, running_for=(0.8,))}
    assert balance(trickle, o).desired == {"a": 1}
    # half a cooldown in: it is expected to run as long again, leaving room for 1 x 0.05 s of work
    assert balance({"a": PoolStats(1, 0.05, 1, 1, (1.5,))}, o).desired == {"a": 1}
    # two stuck, five waiting: one worker each for the stuck ones, one for the queue
    assert balance({"a": PoolStats(5, 0.05, 2, 2, (9.0, 4.0))}, o).desired == {"a": 3}


def test_a_job_that_has_run_a_whole_cooldown_counts_as_a_whole_worker_exhaustively():
    """usable() over a grid: bounds, the old rule when nothing has run long, monotony, head-of-line."""
    ages = (0.0, 0.2, 1.0, 2.9, 3.0, 50.0, math.inf, -1.0, math.nan)
    for pending, busy, runtime, cooldown in itertools.product(range(5), range(4), (0.0, 0.05, 1.0, 3.0, 9.0),
                                                              (0.0, 0.5, 3.0)):
        jobs = pending + busy
        fresh = usable(pending, busy, runtime, cooldown)
        old = jobs if cooldown <= 0 or jobs == 0 else \
            min(jobs, max(1, math.ceil(jobs * max(runtime, 0.001) / cooldown - 1e-9)))
        assert fresh == old == usable(pending, busy, runtime, cooldown, (0.0,) * busy)
        for ran in itertools.product(ages, repeat=busy):
            n = usable(pending, busy, runtime, cooldown, ran)
            assert (1 if jobs else 0) <= n <= jobs and n >= fresh
            assert usable(pending + 1, busy, runtime, cooldown, ran) >= n
            for i, age in enumerate(ran):  # older running jobs never ask for fewer workers
                older = ran[:i] + (age + 1.0 if age == age else 1.0,) + ran[i + 1:]
                assert usable(pending, busy, runtime, cooldown, older) >= n
            if pending and cooldown and all(a >= cooldown for a in ran):
                assert n >= busy + 1, (pending, busy, runtime, cooldown, ran)  # room for the queue


# --- desired counts -------------------------------------------------------------------------


def test_a_pool_never_wants_more_than_its_jobs():
    d = balance(stats({"a": 1, "b": 1}, pending={"a": 2}, busy={"a": 1}), ISSUE)
    assert d.desired == {"a": 3, "b": 1}


def test_no_pending_and_no_busy_means_the_floor():
    d = balance(stats({"a": 5, "b": 0}), Options("auto", "size", 2, 8, 1))
    assert d.desired == {"a": 2, "b": 2}
    assert d.reasons["a"] == "no work, floor -> 2 (-1)"


def test_cap_cuts_the_largest_shares_first_never_below_a_floor():
    o = Options("auto", "size", 2, 10, 10)
    d = balance(stats({"a": 0, "b": 0, "c": 0}, pending={"a": 700, "b": 200, "c": 1}), o)
    # raw: ceil(7.8)=8, ceil(2.2)=3, c lifted to its floor 2 -> 13 > 10: a alone is cut
    assert d.desired == {"a": 5, "b": 3, "c": 2}
    d = balance(stats({"a": 0, "b": 0, "c": 0}, pending={"a": 600, "b": 300, "c": 1}), o)
    assert d.desired == {"a": 4, "b": 4, "c": 2}  # 7 + 4 + 2: a is cut down to b's level first
    assert sum(d.desired.values()) == 10


def test_cap_leftover_goes_to_the_heavier_pool_on_ties():
    o = Options("auto", "size", 0, 3, 3)
    d = balance(stats({"a": 0, "b": 0}, pending={"a": 100, "b": 101}), o)
    assert d.desired == {"a": 1, "b": 2}


def test_floors_fit_the_cap_when_patterns_expand():
    assert pool_floors(3, 2, 8) == [2, 2, 2]
    assert pool_floors(5, 2, 8) == [2, 2, 2, 1, 1]
    assert pool_floors(10, 1, 8) == [1] * 8 + [0, 0]
    o = Options("auto", "size", 2, 8, 8)
    d = balance(stats(dict.fromkeys("abcde", 0)), o)
    assert d.targets == {"a": 2, "b": 2, "c": 2, "d": 1, "e": 1}


def test_simple_splits_max_evenly_remainder_first():
    o = Options("simple", "time", 1, 10, 10)
    assert balance(stats({"a": 0, "b": 0, "c": 0}), o).targets == {"a": 4, "b": 3, "c": 3}
    # the split ignores the backlog
    assert balance(stats({"a": 0, "b": 0}, pending={"a": 999}), o).targets == {"a": 5, "b": 5}
    assert balance(stats({"a": 0}), o).reasons["a"] == "even split of 10 -> 10 (+10)"


def test_off_follows_the_backlog_between_min_and_max():
    o = Options("off", "size", 2, 8, 3)
    assert balance(stats({"*": 0}), o).targets == {"*": 2}
    assert balance(stats({"*": 2}, pending={"*": 4}, busy={"*": 1}), o).desired == {"*": 5}
    steps = replay({"*": 2}, o, 4, pending={"*": 100})
    assert [d.targets["*"] for d in steps] == [5, 8, 8, 8]
    assert steps[0].reasons["*"] == "backlog 100 + 0 running -> 8 (+3, shift 3)"
    assert balance(stats({"*": 0}), Options("off", "size", 9, 4, 9)).targets == {"*": 4}  # cap beats min


def test_off_takes_exactly_one_pool():
    with pytest.raises(ValueError):
        balance(stats({"a": 0, "b": 0}), Options("off", "size", 1, 8, 2))


@pytest.mark.parametrize("options", [
    Options("fast", "size", 1, 8, 2), Options("auto", "count", 1, 8, 2), Options("auto", "size", 1, 0, 2),
    Options("auto", "size", 1, 8, 0), Options("auto", "size", -1, 8, 2),
])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError):
        balance(stats({"a": 0}), options)


def test_no_pools_no_targets():
    assert balance({}, ISSUE) == Decision({}, {}, {})


# --- steps --------------------------------------------------------------------------------------


def test_ups_take_the_room_in_priority_order():
    o = Options("auto", "size", 1, 8, 4)
    d = balance(stats({"a": 3, "b": 2, "c": 2}, pending={"b": 100, "c": 100}, busy={"a": 3}), o)
    # a holds 3 busy workers: b first gets what is left (1), c nothing; a's busy workers are told
    # to stop after their job (yield), their room is handed out once they are gone
    assert d.targets == {"a": 1, "b": 3, "c": 2}
    assert d.reasons["b"].endswith("(+1, cap 8 full)")
    assert d.reasons["c"].endswith("(held: cap 8 full)")


def test_idle_downs_make_room_for_ups_in_the_same_step():
    d = balance(stats({"a": 7, "b": 1}, pending={"b": 1000}), ISSUE)
    assert d.targets == {"a": 5, "b": 3}


def test_a_fully_busy_pool_is_not_scaled_down():
    d = balance(stats({"a": 5, "b": 1}, busy={"a": 5}), ISSUE)
    assert d.targets == {"a": 5, "b": 1}
    assert d.reasons["a"] == "no backlog, 5 running -> 1 (held: all 5 busy)"


def test_scaling_down_stops_only_idle_workers():
    d = balance(stats({"a": 6, "b": 1}, busy={"a": 5}), ISSUE)
    assert d.targets["a"] == 5
    assert d.reasons["a"].endswith("(-1, rest busy)")


def test_equal_means_no_move():
    d = balance(stats({"a": 3, "b": 1}, pending={"a": 1}, busy={"a": 2}), ISSUE)
    assert d.desired["a"] == 3 and d.targets == {"a": 3, "b": 1}


def test_long_running_jobs_do_not_block_the_other_queue():
    # a: 5 workers stuck in long jobs, nothing pending; b gets a backlog
    first = balance(stats({"a": 5, "b": 1}, pending={"b": 1000}, busy={"a": 5}), ISSUE)
    assert first.targets == {"a": 3, "b": 3}  # b takes the free room at once; 2 of a's stop after their job
    assert first.reasons["a"] == "no backlog, 5 running -> 1 (-2, busy ones yield to other queues)"
    # while they are still running (the caller counts them), nothing more is handed out: idempotent
    again = balance(stats({"a": 5, "b": 3}, pending={"b": 1000}, busy={"a": 5}), ISSUE)
    assert again.targets == {"a": 3, "b": 3}
    # once they have exited, b gets their room and a yields the rest b needs
    third = balance(stats({"a": 3, "b": 3}, pending={"b": 1000}, busy={"a": 3}), ISSUE)
    assert third.targets == {"a": 1, "b": 5}
    fourth = balance(stats({"a": 1, "b": 5}, pending={"b": 1000}, busy={"a": 1}), ISSUE)
    assert fourth.targets == {"a": 1, "b": 7}


def test_two_backlogs_rebalance_even_though_every_worker_is_busy():
    steps = replay({"a": 7, "b": 1}, ISSUE, 8, pending={"a": 1000, "b": 1000}, busy={"a": 7, "b": 1})
    # a's busy workers yield, down to one over its desired count (dead band while a has a backlog)
    assert [d.targets for d in steps[:3]] == [{"a": 5, "b": 1}, {"a": 5, "b": 3}, {"a": 5, "b": 3}]
    assert steps[-1].targets == {"a": 5, "b": 3} and max(totals(steps)) <= 8
    assert steps[-1].reasons == {"a": "backlog 1000 jobs, share 50% of 8 -> 4 (held: all 5 busy)",
                                 "b": "backlog 1000 jobs, share 50% of 8 -> 4 (held: cap 8 full)"}
    # the first idle moment of one of a's workers settles it on the formula
    assert balance(stats({"a": 5, "b": 3}, pending={"a": 1000, "b": 1000}, busy={"a": 4, "b": 3}),
                   ISSUE).targets == {"a": 4, "b": 4}


def test_dead_band_stops_a_busy_worker_trading_back_and_forth():
    # the desired split wobbles by one, 5/3 -> 3/5 -> 4/4, with every worker busy: nobody moves
    held = {"a": 4, "b": 4}
    for pending, desired in (((1300, 700), (5, 3)), ((700, 1300), (3, 5)), ((1000, 1000), (4, 4))):
        d = balance(stats(held, pending=dict(zip("ab", pending, strict=True)), busy=held), ISSUE)
        assert tuple(d.desired.values()) == desired
        assert d.targets == held, d.reasons


def test_the_dead_band_gives_way_to_a_pool_below_its_floor():
    o = Options("auto", "size", 2, 8, 2)
    d = balance(stats({"a": 7, "b": 1}, pending={"a": 1000, "b": 1}, busy={"a": 7}), o)
    assert d.desired == {"a": 6, "b": 2} and d.targets == {"a": 6, "b": 1}
    assert balance(stats(d.targets, pending={"a": 1000, "b": 1}, busy={"a": 6}), o).targets == {"a": 6, "b": 2}


def test_memory_low_holds_ups_and_lets_downs_happen():
    o = Options("auto", "size", 1, 8, 2, memory_ok=False)
    d = balance(stats({"a": 1, "b": 5}, pending={"a": 1000}), o)
    assert d.targets == {"a": 1, "b": 3}
    assert d.reasons["a"].endswith("(held: free memory low)")
    assert balance(stats({"a": 0, "b": 0}), o).targets == {"a": 1, "b": 1}  # floors still hold


def test_over_the_cap_after_a_reload_no_pool_grows():
    d = balance(stats({"a": 10, "b": 1}, pending={"a": 1000, "b": 1000}), ISSUE)
    assert d.targets == {"a": 8, "b": 1}


def test_an_idle_system_is_stable():
    for o in (ISSUE, Options("auto", "time", 2, 10, 1), Options("off", "size", 1, 8, 2)):
        keys = ["*"] if o.mode == "off" else ["a", "b", "c"]
        steps = replay(dict.fromkeys(keys, 0), o, 12)
        assert all(d.targets == steps[-1].targets for d in steps[-10:])


# --- properties ---------------------------------------------------------------------------------

PROPS = settings(max_examples=200, deadline=None, database=None)


# Strategies built once: building them inside the composite costs more than the checks.
RUNTIMES = st.one_of(st.none(), st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0, 7.5, 60.0]), st.floats(0, 120))
AGES = st.lists(st.sampled_from([0.0, 0.4, 1.0, 3.0, 60.0, math.inf, -1.0, math.nan]) | st.floats(0, 1e4), max_size=6)
POOL = st.tuples(st.sampled_from([0, 0, 1, 3, 40, 1500]) | st.integers(0, 5000), RUNTIMES,
                 st.integers(0, 40), st.integers(0, 41), AGES)
SETUP = st.tuples(st.sampled_from(["time", "size"]), st.integers(1, 20), st.integers(0, 4), st.integers(1, 6),
                  st.booleans(), st.sampled_from([0.0, 0.0, 1.0, 3.0]), st.lists(POOL, min_size=1, max_size=5))
MODES = st.sampled_from(["auto", "simple", "off"])


@st.composite
def scenarios(draw, within_cap=True):
    """Any options and pool stats; with within_cap, currents that total at most max_processes."""
    mode = draw(MODES)
    strategy, cap, floor, shift, memory_ok, cooldown, raw = draw(SETUP)
    o = Options(mode, strategy, floor, cap, shift, memory_ok, cooldown)
    room = cap if within_cap else 2 * cap * len(raw)
    pools = {}
    for i, (pending, runtime, current, busy, ages) in enumerate(raw[:1] if mode == "off" else raw):
        current = min(current, room, 2 * cap)
        room -= current if within_cap else 0
        pools["*" if mode == "off" else f"q{i}"] = PoolStats(pending, runtime, min(busy, current + 1), current,
                                                             tuple(ages))
    return pools, o


def iterate(pools, o, steps):
    """Fixed pending/runtime/busy, current <- targets."""
    seen = []
    for _ in range(steps):
        d = balance(pools, o)
        seen.append(d.targets)
        pools = {k: PoolStats(p.pending, p.runtime, p.busy, d.targets[k], p.running_for) for k, p in pools.items()}
    return seen


# One step, any input (currents over the cap too, as after a reload that lowered max_processes).
# Each rule is its own function; one @given runs them all on the same examples (keeps the file fast).


def never_above_max_in_total(pools, o, d):
    before = sum(p.current for p in pools.values())
    assert sum(d.targets.values()) <= max(o.max_processes, before)  # over the cap it never grows
    assert sum(d.desired.values()) <= o.max_processes


def never_moves_a_pool_by_more_than_the_shift(pools, o, d):
    floors = dict(zip(pools, pool_floors(len(pools), o.min_processes, o.max_processes), strict=True))
    # except straight up to its floor: a floor is a guarantee, reached in one step
    assert all(abs(d.targets[k] - p.current) <= max(o.max_shift, floors[k] - p.current) for k, p in pools.items())
    assert all(t >= 0 for t in d.targets.values())


def never_below_the_floors(pools, o, d):
    floors = pool_floors(len(pools), o.min_processes, o.max_processes)
    for (k, p), floor in zip(pools.items(), floors, strict=True):
        assert d.desired[k] >= floor
        assert d.targets[k] >= min(floor, p.current)  # below its floor a pool only ever rises toward it


def a_fully_busy_pool_shrinks_only_to_yield(pools, o, d):
    """Never scaled down for itself; only when another pool lacks room under the cap."""
    for k, p in pools.items():
        if p.busy >= p.current and d.targets[k] < p.current:
            assert o.memory_ok and d.targets[k] >= d.desired[k]
            assert any(d.desired[j] > q.current for j, q in pools.items() if j != k)


def memory_low_never_raises_a_target(pools, o, d):
    low = balance(pools, Options(o.mode, o.strategy, o.min_processes, o.max_processes, o.max_shift, False,
                                 o.cooldown))
    floors = dict(zip(pools, pool_floors(len(pools), o.min_processes, o.max_processes), strict=True))
    assert all(low.targets[k] <= max(p.current, floors[k]) for k, p in pools.items())


@PROPS
@given(scenarios(), st.floats(0.1, 60), st.integers(1, 5))
def test_prop_jobs_behind_workers_busy_a_whole_cooldown_get_one_while_there_is_room(case, cooldown, stuck):
    """Head-of-line: a lone pool with a queue and every worker a cooldown into its job scales up."""
    pools, o = case
    (key, p), *_ = pools.items()
    o = Options("off" if o.mode == "off" else "auto", o.strategy, o.min_processes, o.max_processes, o.max_shift,
                True, cooldown)
    current = min(stuck, o.max_processes - 1)
    if current < 1:
        return  # max_processes 1: no room to scale
    pool = PoolStats(max(1, p.pending), p.runtime, current, current, (cooldown,) * current)
    d = balance({key: pool}, o)
    assert d.targets[key] > current, d.reasons


@PROPS
@given(scenarios(within_cap=False))
def test_prop_one_step_keeps_every_limit(case):
    pools, o = case
    d = balance(pools, o)
    for rule in (never_above_max_in_total, never_moves_a_pool_by_more_than_the_shift, never_below_the_floors,
                 a_fully_busy_pool_shrinks_only_to_yield, memory_low_never_raises_a_target):
        rule(pools, o, d)


@PROPS
@given(scenarios())
def test_prop_converges_to_a_fixed_point_stays_and_rests_on_or_above_the_floors(case):
    pools, o = case
    bound = math.ceil(o.max_processes / o.max_shift) + 2
    seen = iterate(pools, o, bound + 4)
    assert seen[bound - 1] == seen[-1], seen
    # with free memory and no worker stuck in a job, every pool rests on or above its floor
    o = Options(o.mode, o.strategy, o.min_processes, o.max_processes, o.max_shift, True, o.cooldown)
    idle = {k: PoolStats(p.pending, p.runtime, 0, p.current) for k, p in pools.items()}
    rest = iterate(idle, o, bound)[-1]
    floors = pool_floors(len(pools), o.min_processes, o.max_processes)
    assert all(rest[k] >= f for k, f in zip(pools, floors, strict=True))


LOADED = st.tuples(st.integers(2, 20), st.integers(0, 10), st.integers(1, 6), st.sampled_from([0.0, 1.0, 3.0]),
                   st.lists(st.tuples(st.integers(0, 5000), st.floats(0.01, 60), st.integers(0, 10)),
                            min_size=2, max_size=2))


def two_loaded_pools(strategy):
    """Two pools with more pending jobs than the cap each (size: with the same runtime)."""
    def build(args):
        cap, floor, shift, cooldown, raw = args
        o = Options("auto", strategy, min(floor, cap // 2), cap, shift, cooldown=cooldown)
        same = strategy == "size"
        return {f"q{i}": PoolStats(cap + pending, raw[0][1] if same else runtime, 0, min(current, cap // 2))
                for i, (pending, runtime, current) in enumerate(raw)}, o
    return LOADED.map(build)


def _check_split(pools, o, key):
    rest = iterate(pools, o, math.ceil(o.max_processes / o.max_shift) + 2)[-1]
    (a, pa), (b, pb) = pools.items()
    if key(pa) > key(pb):
        assert rest[a] >= rest[b]
    elif key(pb) > key(pa):
        assert rest[b] >= rest[a]
    if not o.cooldown:
        assert sum(rest.values()) == o.max_processes  # with that much work the whole cap is used


@PROPS
@given(two_loaded_pools("size"))
def test_prop_size_gives_more_pending_at_least_as_many_workers(case):
    _check_split(*case, key=lambda p: p.pending)


@PROPS
@given(two_loaded_pools("time"))
def test_prop_time_gives_more_pending_x_runtime_at_least_as_many_workers(case):
    _check_split(*case, key=lambda p: p.pending * p.runtime)


def test_capped_is_the_balancers_water_filling_and_never_raises_a_pool():
    from horizond.core.balancer import capped

    assert capped({"a": 2, "b": 1}, 1, 6) == {"a": 2, "b": 1}  # under the cap: untouched
    assert capped({"a": 5, "b": 4}, 1, 6) == {"a": 3, "b": 3}  # over: the larger gives way first, evenly
    assert capped({"a": 0, "b": 9}, 1, 4) == {"a": 0, "b": 4}  # a pool below its floor is not lifted
    assert sum(capped({"a": 7, "b": 7, "c": 7}, 2, 10).values()) == 10
