"""Health thresholds, on their edges."""

from hypothesis import given
from hypothesis import strategies as st

from horizond.core.health import GREEN, RED, YELLOW, Indicator, grade, verdict


def test_edges_are_inclusive():
    assert grade("failed_jobs", 9, (10, 50)).level == GREEN
    assert grade("failed_jobs", 10, (10, 50)).level == YELLOW
    assert grade("failed_jobs", 49, (10, 50)).level == YELLOW
    assert grade("failed_jobs", 50, (10, 50)).level == RED
    assert grade("oldest_job_age", None, (7200, 21600)).level == GREEN


def test_memory_shows_as_a_share():
    assert "85%" in grade("worker_memory", 0.85, (0.8, 0.9)).detail


@given(st.lists(st.sampled_from([GREEN, YELLOW, RED]), min_size=1))
def test_the_worst_indicator_decides(levels):
    expected = RED if RED in levels else YELLOW if YELLOW in levels else GREEN
    assert verdict([Indicator("x", None, level, "") for level in levels]) == expected


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e6))
def test_grade_is_monotonic(value, a, b):
    warning, critical = sorted((a, b))
    rank = {GREEN: 0, YELLOW: 1, RED: 2}
    lower, higher = grade("q", value, (warning, critical)), grade("q", value * 2 + 1, (warning, critical))
    assert rank[lower.level] <= rank[higher.level]
