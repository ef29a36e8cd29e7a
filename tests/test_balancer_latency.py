"""The pure pieces of the coming "latency" strategy (issue 19): need, prediction, risk order."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from horizond.core.balancer import by_risk, latency_need, predicted_latency

pendings = st.integers(0, 100_000)
ages = st.floats(0, 10_000)
runtimes = st.one_of(st.none(), st.floats(0.001, 600))
rates = st.floats(0, 1000)
limits = st.floats(0.1, 86_400)


@given(pendings, ages, runtimes, rates, limits)
def test_more_work_never_needs_fewer_workers(pending, age, runtime, rate, limit):
    need = latency_need(pending, age, runtime, rate, limit)
    assert latency_need(pending + 10, age, runtime, rate, limit) >= need
    assert latency_need(pending, age, runtime, rate * 2 + 1, limit) >= need
    assert latency_need(pending, age + 5, runtime, rate, limit) >= need
    assert latency_need(pending, age, runtime, rate, limit * 2) <= need


@given(pendings, ages, runtimes, rates, limits)
def test_the_need_keeps_up_with_arrivals_and_is_zero_only_without_work(pending, age, runtime, rate, limit):
    need = latency_need(pending, age, runtime, rate, limit)
    assert (need == 0) == (pending == 0 and rate == 0)
    assert need >= math.floor(rate * (runtime or 1.0) * (1 - 1e-9))


@given(st.integers(1, 10_000), st.floats(0.01, 60), st.floats(10, 3600))
def test_a_fresh_backlog_given_its_need_finishes_in_time(pending, runtime, limit):
    """With no arrivals and a new backlog, the workers asked for clear it within max_latency
    (up to one round of runtime: jobs run whole)."""
    need = latency_need(pending, 0.0, runtime, 0.0, limit)
    assert predicted_latency(pending, 0.0, runtime, need) <= max(limit, 3 * runtime) + runtime + 1e-6


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0, 100), max_size=8))
def test_the_riskiest_pool_is_served_first(risks):
    order = by_risk(risks)
    assert sorted(order) == sorted(risks)
    assert [risks[k] for k in order] == sorted(risks.values(), reverse=True)
