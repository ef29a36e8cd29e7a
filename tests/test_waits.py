"""core/waits.py and core/counts.py: long-wait decisions and per-queue process counts, pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from horizond.core import waits
from horizond.core.counts import processes_per_queue

QUEUES = st.sampled_from(["a", "b", "c", "d"])


def test_a_queue_nobody_works_waits_for_ever_unless_paused():
    est = waits.estimated_waits({"a": 5, "b": 5, "c": 0}, {}, {"a": 1.0, "b": 1.0, "c": 1.0}, {}, paused={"b"})
    assert est == {"a": float("inf"), "b": 0.0, "c": 0.0}


def test_the_wait_is_the_longer_of_the_oldest_age_and_the_backlog_pace():
    est = waits.estimated_waits({"a": 10, "b": 10}, {"a": 3.0, "b": 30.0}, {"a": 2.0, "b": 2.0}, {"a": 2, "b": 2},
                                set())
    assert est == {"a": 10.0, "b": 30.0}


@given(st.dictionaries(QUEUES, st.integers(0, 10_000)), st.dictionaries(QUEUES, st.floats(0, 1e6)),
       st.dictionaries(QUEUES, st.floats(0, 100)), st.dictionaries(QUEUES, st.integers(0, 50)),
       st.sets(QUEUES))
def test_estimated_waits_never_below_the_oldest_age(pending, ages, runtimes, working, paused):
    est = waits.estimated_waits(pending, ages, runtimes, working, paused)
    assert set(est) == set(pending)
    assert all(est[q] >= ages.get(q, 0.0) for q in est)


def test_a_crossing_is_reported_once_per_dedupe_window():
    threshold = {"a": 60, "b": 60}.get
    out, state = waits.crossing({"a": 61.0, "b": 10.0}, threshold, now=1000.0, notified={})
    assert out == [("a", 61.0, 60)] and state == {"a": 1000.0}
    again, state2 = waits.crossing({"a": 99.0}, threshold, now=1000.0 + waits.DEDUPE - 1, notified=state)
    assert again == [] and state2 == state
    later, _ = waits.crossing({"a": float("inf")}, threshold, now=1000.0 + waits.DEDUPE, notified=state)
    assert later == [("a", waits.NEVER, 60)]


@given(st.dictionaries(QUEUES, st.floats(0, 1e6) | st.just(float("inf"))),
       st.dictionaries(QUEUES, st.integers(0, 100)), st.floats(0, 1e6),
       st.dictionaries(QUEUES, st.floats(0, 1e6)))
def test_crossing_reports_exactly_the_queues_over_their_threshold_not_seen_lately(estimated, limits, now, notified):
    before = dict(notified)
    out, state = waits.crossing(estimated, limits.get, now, notified)
    assert notified == before  # the caller's state is not changed in place
    reported = {q for q, _, _ in out}
    for q, wait in estimated.items():
        over = bool(limits.get(q)) and wait > limits[q]
        fresh = now - notified.get(q, -waits.DEDUPE) >= waits.DEDUPE
        assert (q in reported) == (over and fresh)
    assert all(state[q] == now for q in reported)
    assert all(state[q] == notified[q] for q in notified if q not in reported)


def test_processes_per_queue_counts_paused_pools_as_none():
    counts, only_paused = processes_per_queue([(("a", "b"), 2, False), (("b",), 3, False), (("c",), 4, True)])
    assert counts == {"a": 2, "b": 5, "c": 0} and only_paused == {"c"}


POOL = st.tuples(st.lists(QUEUES, min_size=1, max_size=3, unique=True).map(tuple), st.integers(0, 20), st.booleans())


@given(st.lists(POOL))
def test_processes_per_queue_sums_the_unpaused_pools(pools):
    counts, only_paused = processes_per_queue(pools)
    for q in counts:
        assert counts[q] == sum(n for qs, n, paused in pools if q in qs and not paused)
        assert (q in only_paused) == all(paused for qs, _, paused in pools if q in qs)
