"""supervise/duties.py: the master loop's scheduler of periodic duties."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from horizond.supervise.duties import Duties


def test_a_duty_runs_when_due_and_then_after_its_period():
    ran = []
    duties = Duties()
    duties.add("a", 1.0, lambda now: ran.append(now))
    duties.run_due(10.0)
    assert ran == [10.0] and duties.next_deadline() == 11.0
    duties.run_due(10.5)
    assert ran == [10.0]
    assert duties.time_to_next(10.5) == 0.5
    duties.run_due(11.0)
    assert ran == [10.0, 11.0]


def test_a_duty_may_ask_for_a_nearer_deadline_never_a_later_one():
    duties = Duties()
    duties.add("near", 1.0, lambda now: 0.25)
    duties.add("far", 1.0, lambda now: 60.0)
    duties.run_due(0.0)
    assert duties["near"].next_due == 0.25 and duties["far"].next_due == 1.0


def test_wake_makes_only_that_duty_due():
    duties = Duties()
    duties.add("a", 5.0, lambda now: None)
    duties.add("b", 5.0, lambda now: None)
    duties.run_due(0.0)
    duties.wake("b")
    assert duties.due(1.0) == ["b"] and duties.time_to_next(1.0) == 0.0


def test_a_duty_woken_while_it_runs_stays_due():
    duties = Duties()
    duties.add("a", 5.0, lambda now: duties.wake("b"))
    duties.add("b", 5.0, lambda now: duties.wake("a"))
    duties.run_due(0.0)
    assert duties.due(0.0) == ["a"]  # b woke a after a ran; b itself ran after a woke it


def test_due_by_only_brings_a_deadline_forward():
    duties = Duties()
    duties.add("probe", 10.0, lambda now: None)
    duties.run_due(0.0)
    duties.due_by("probe", 20.0)
    assert duties["probe"].next_due == 10.0
    duties.due_by("probe", 0.25)
    assert duties["probe"].next_due == 0.25


@given(st.lists(st.floats(0.01, 100), min_size=1, max_size=8), st.floats(0, 1000))
def test_the_loop_never_sleeps_past_a_deadline(periods, start):
    duties = Duties()
    for i, period in enumerate(periods):
        duties.add(str(i), period, lambda now: None)
    assert duties.time_to_next(start) == 0.0  # everything is due at the first turn
    duties.run_due(start)
    sleep = duties.time_to_next(start)
    assert math.isclose(sleep, min(periods), rel_tol=1e-9, abs_tol=1e-9)
    assert duties.due(start + sleep) != []
