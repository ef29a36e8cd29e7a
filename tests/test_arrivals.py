"""The arrival-rate estimate the "latency" strategy sizes pools by (core/arrivals.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from horizond.core.arrivals import HALF_LIFE, Point, rate


def replay(arrivals_per_step: list[int], served_per_step: list[int], dt: float) -> float:
    """A queue fed and drained step by step, estimated as the scaler does."""
    estimate, before, in_system, finished = 0.0, None, 0, 0
    for step, (came, served) in enumerate(zip(arrivals_per_step, served_per_step, strict=True)):
        in_system += came
        done = min(served, in_system)
        in_system -= done
        finished += done
        point = Point(step * dt, in_system, finished)
        estimate = rate(estimate, before, point)
        before = point
    return estimate


def test_a_steady_stream_is_measured_whether_the_workers_keep_up_or_not():
    steps = int(10 * HALF_LIFE / 3)
    keeping_up = replay([12] * steps, [12] * steps, dt=3.0)  # 4 jobs/s, all served
    falling_behind = replay([12] * steps, [3] * steps, dt=3.0)  # 4 jobs/s, a growing backlog
    assert math.isclose(keeping_up, 4.0, rel_tol=0.01)
    assert math.isclose(falling_behind, 4.0, rel_tol=0.01)


def test_a_burst_lifts_the_rate_within_a_half_life_and_a_lull_brings_it_down():
    dt = 1.0
    burst = replay([0] * 10 + [50] * int(HALF_LIFE), [50] * (10 + int(HALF_LIFE)), dt)
    assert 24 <= burst <= 26  # half way to 50/s after one half-life
    after = replay([50] * 300 + [0] * int(2 * HALF_LIFE), [50] * (300 + int(2 * HALF_LIFE)), dt)
    assert 12 <= after <= 13  # a quarter left after two half-lives


def test_the_cadence_does_not_change_what_the_rate_means():
    fine = replay([2] * 600, [2] * 600, dt=0.5)  # 4/s sampled every 0.5 s
    coarse = replay([20] * 60, [20] * 60, dt=5.0)  # 4/s sampled every 5 s
    assert math.isclose(fine, coarse, rel_tol=0.02)


def test_a_first_point_or_a_restarted_counter_keeps_the_previous_rate():
    assert rate(3.5, None, Point(10.0, 5, 0)) == 3.5
    assert rate(3.5, Point(10.0, 5, 100), Point(12.0, 5, 3)) == 3.5  # a new master: counts restart
    assert rate(3.5, Point(10.0, 5, 1), Point(10.0, 9, 1)) == 3.5  # no time passed


@given(previous=st.floats(0, 1e6), at=st.floats(0, 1e6), dt=st.floats(-10, 1e4),
       before=st.integers(0, 10**6), after=st.integers(0, 10**6), done=st.integers(0, 10**6),
       more=st.integers(-10, 10**6))
def test_the_rate_is_never_negative_nor_beyond_what_the_counts_allow(previous, at, dt, before, after, done, more):
    new = rate(previous, Point(at, before, done), Point(at + dt, after, done + more))
    assert new >= 0 and math.isfinite(new)
    if dt >= 0.001 and more >= 0:
        instant = max(0, after - before + more) / dt
        assert min(previous, instant) - 1e-6 <= new <= max(previous, instant) + 1e-6
