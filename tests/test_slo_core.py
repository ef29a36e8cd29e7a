"""The pure service-level core: the latency sketch, the window, the budget and the config."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from horizond.core import config, configtoml, sketch, slo
from horizond.core.slo import Slice, SloTarget

latencies = st.lists(st.floats(0, 200_000, allow_nan=False), min_size=1, max_size=300)
hists = st.dictionaries(st.integers(0, sketch.BUCKETS - 1), st.integers(1, 1000), max_size=40)
qs = st.floats(0.001, 1.0)


def hist_of(values) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        sketch.add(out, v)
    return out


def nearest_rank(values, q) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


@settings(max_examples=300)
@given(st.floats(0, 1e6, allow_nan=False))
def test_a_value_lies_in_its_bucket(value):
    index = sketch.bucket_of(value)
    assert 0 <= index < sketch.BUCKETS
    if index > 0 and index < sketch.BUCKETS - 1:
        assert sketch.upper_edge(index - 1) < value <= sketch.upper_edge(index)
    if index == 0:
        assert value <= sketch.FLOOR


@settings(max_examples=300)
@given(latencies, qs)
def test_a_quantile_is_within_bucket_error_of_the_exact_one(values, q):
    exact = nearest_rank(values, q)
    got = sketch.quantile(hist_of(values), q)
    if exact <= sketch.FLOOR:
        assert got == sketch.FLOOR
    elif exact <= sketch.upper_edge(sketch.BUCKETS - 1):
        assert abs(got - exact) <= sketch.BUCKET_ERROR * exact * (1 + 1e-9)


@settings(max_examples=200)
@given(hists, st.lists(qs, min_size=2, max_size=10))
def test_quantiles_never_fall_as_q_rises(hist, points):
    got = [sketch.quantile(hist, q) for q in sorted(points)]
    if not hist:
        assert got == [None] * len(points)
    else:
        assert got == sorted(got)
        assert got[-1] <= sketch.quantile(hist, 1.0)


@given(hists, hists, hists)
def test_merging_is_associative_and_commutative(a, b, c):
    assert sketch.merge(sketch.merge(a, b), c) == sketch.merge(a, sketch.merge(b, c)) == sketch.merge(c, b, a)
    assert sketch.total(sketch.merge(a, b)) == sketch.total(a) + sketch.total(b)


@settings(max_examples=200)
@given(latencies, latencies)
def test_two_masters_merged_read_like_one_that_saw_every_job(one, other):
    merged = sketch.merge(hist_of(one), hist_of(other))
    assert merged == hist_of(one + other)
    for q in (0.5, 0.95, 0.99, 1.0):
        assert sketch.quantile(merged, q) == sketch.quantile(hist_of(one + other), q)


def test_the_histogram_stays_bounded_whatever_the_job_count():
    hist = hist_of(i * 0.37 % 5000 for i in range(200_000))
    assert len(hist) <= sketch.BUCKETS and sketch.total(hist) == 200_000
    assert sketch.bucket_of(10**9) == sketch.BUCKETS - 1 and sketch.bucket_of(-1) == 0
    assert sketch.bucket_of(float("nan")) == 0


def test_fields_from_redis_ignore_what_is_not_a_bucket():
    assert sketch.from_fields({"b3": 2, "b99999": 5, "bx": 1, "n": 4, "b4": 0}) == {3: 2}


# --- the window, the budget, the burn ---------------------------------------------------------

TARGET = SloTarget("q", throughput=60, max_latency=5.0, success_rate=99.0, window=3600)
NOW = 1_700_000_000.0


def slices_of(jobs, target=TARGET) -> dict[int, Slice]:
    """jobs: (seconds ago, ok, latency)."""
    out: dict[int, Slice] = {}
    for ago, ok, latency in jobs:
        start = slo.slice_start(target.window, NOW - ago)
        fields = slo.job_fields(target, ok, latency)
        out[start] = out.get(start, Slice()).add(slo.from_fields(fields))
    return out


def test_the_window_is_sixty_whole_minute_slices_ending_with_the_current_one():
    starts = slo.window_starts(3600, NOW)
    assert len(starts) == 60 and all(s % 60 == 0 for s in starts)
    assert starts[-1] <= NOW < starts[-1] + 60 and starts[0] == starts[-1] - 59 * 60
    assert slo.slice_seconds(86_400) == 1440 and len(slo.window_starts(86_400, NOW)) == 60
    assert slo.slice_seconds(300) == 60 and len(slo.window_starts(300, NOW)) == 5


def test_a_quiet_queue_has_no_data_and_a_full_budget():
    report = slo.evaluate(TARGET, {}, NOW)
    assert report["state"] == "no data" and report["error_budget_remaining"] == 1.0
    assert report["latency"]["p50"] is None and report["success_rate"] is None


def test_failed_and_late_jobs_spend_the_budget():
    good = [(i * 30, True, 1.0) for i in range(100)]
    report = slo.evaluate(TARGET, slices_of(good), NOW)
    assert report["state"] == "ok" and report["success_rate"] == 100 and report["error_budget_remaining"] == 1.0
    one_bad = slo.evaluate(TARGET, slices_of(good[:99] + [(900, False, 1.0)]), NOW)
    assert one_bad["success_rate"] == 99.0 and one_bad["error_budget_remaining"] == pytest.approx(0.0)
    assert one_bad["state"] == "ok"  # 99 of 100: exactly the objective
    two_bad = slo.evaluate(TARGET, slices_of(good[:98] + [(900, False, 1.0), (1000, True, 9.0)]), NOW)
    assert two_bad["state"] == "violated" and two_bad["error_budget_remaining"] == pytest.approx(-1.0)
    assert two_bad["over_max_latency"] == 0.01 and two_bad["success_rate"] == 99.0 and two_bad["good_rate"] == 98.0


def test_a_job_both_failed_and_late_is_spent_once():
    jobs = [(i * 30, True, 1.0) for i in range(99)] + [(10, False, 60.0)]
    report = slo.evaluate(TARGET, slices_of(jobs), NOW)
    assert report["good_rate"] == 99.0 and report["state"] != "violated"


def test_a_burst_of_failures_now_burns_fast_before_the_window_is_violated():
    calm = [(600 + i * 10, True, 1.0) for i in range(290)]  # most of an hour, all good
    burst = [(i * 5, i % 4 != 0, 1.0) for i in range(12)]  # the last minute: a quarter fail
    report = slo.evaluate(TARGET, slices_of(calm + burst), NOW)
    assert "fast" in report["alerts"] and report["state"] == "burning"
    assert report["burn_rate"]["fast"]["short"] >= 6 and report["error_budget_remaining"] > 0
    old = slo.evaluate(TARGET, slices_of(calm + [(ago + 1200, ok, lat) for ago, ok, lat in burst]), NOW)
    assert old["alerts"] == [] and old["state"] == "ok"  # the same failures 20 minutes ago: no longer burning


def test_jobs_older_than_the_window_no_longer_count():
    report = slo.evaluate(TARGET, slices_of([(3700, False, 1.0), (10, True, 1.0)]), NOW)
    assert report["jobs"] == 1 and report["state"] == "ok"


def test_throughput_achieved_against_offered():
    jobs = [(i * 6, True, 0.5) for i in range(100)]  # 100 jobs in the last 10 minutes
    slices = slices_of(jobs)
    first = min(slices)
    slices[first].pending = 50  # 50 waited at the start; 10 wait now: 140 arrived
    report = slo.evaluate(TARGET, slices, NOW, pending_now=10)
    span = (NOW - first) / 60
    assert report["throughput"]["achieved"] == pytest.approx(100 / span, rel=1e-3)
    assert report["throughput"]["offered"] == pytest.approx(60 / span, rel=1e-3)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 3599), st.booleans(), st.floats(0, 20)), max_size=80))
def test_the_budget_is_spent_exactly_when_the_objective_is_missed(jobs):
    report = slo.evaluate(TARGET, slices_of(jobs), NOW)
    if report["jobs"]:
        assert (report["state"] == "violated") == (report["error_budget_remaining"] < -1e-9)
        assert report["latency"]["p50"] <= report["latency"]["p95"] <= report["latency"]["p99"] \
            <= report["latency"]["max"]


# --- config -----------------------------------------------------------------------------------

def build(slo_table: dict):
    return config.build({"supervisors": {"a": {"queues": ["webhooks"]}}, "slo": slo_table}, "t.toml")


def test_the_table_builds_and_patterns_match_in_file_order():
    cfg = build({"webhooks-*": {"throughput": 500, "max_latency": 5, "success_rate": 99.9},
                 "webhooks": {"throughput": 1000, "max_latency": 30, "success_rate": 99.5, "window": 600},
                 "*": {"throughput": 1, "max_latency": 600, "success_rate": 90}})
    assert slo.slo_for(cfg.slos, "webhooks").window == 600
    assert slo.slo_for(cfg.slos, "webhooks-high").max_latency == 5
    assert slo.slo_for(cfg.slos, "other").pattern == "*"
    assert slo.slo_for((), "other") is None
    assert configtoml.to_toml_dict(cfg)["slo"]["webhooks"]["window"] == 600


@pytest.mark.parametrize("table, key, words", [
    ({"throughput": 1, "max_latency": 5}, "success_rate", "missing"),
    ({"throughput": 1, "max_latency": 5, "success_rate": 100}, "success_rate", "no error budget"),
    ({"throughput": 1, "max_latency": 5, "success_rate": 0}, "success_rate", "above 0"),
    ({"throughput": -1, "max_latency": 5, "success_rate": 99}, "throughput", "jobs per minute"),
    ({"throughput": 1, "max_latency": 0, "success_rate": 99}, "max_latency", "seconds"),
    ({"throughput": 1, "max_latency": "5s", "success_rate": 99}, "max_latency", "'5s'"),
    ({"throughput": 1, "max_latency": 5, "success_rate": 99, "window": 30}, "window", "300"),
    ({"throughput": 1, "max_latency": 5, "success_rate": 99, "window": 600.5}, "window", "whole seconds"),
    ({"throughput": 1, "max_latency": 5, "success_rate": 99, "max_latncy": 3}, "max_latncy", "did you mean"),
])
def test_a_bad_level_names_its_table_and_key(table, key, words):
    with pytest.raises(config.ConfigError) as info:
        build({"webhooks": table})
    issues = [i for i in info.value.issues if i.key == key]
    assert issues and issues[0].table == 'slo."webhooks"' and words in issues[0].message, info.value


def test_a_level_that_is_not_a_table_is_refused():
    with pytest.raises(config.ConfigError, match=r"\[slo\] key 'webhooks': expected a table"):
        build({"webhooks": 99.5})


def test_the_shipped_config_carries_the_seed_levels():
    from pathlib import Path

    cfg = config.parse((Path(__file__).resolve().parent.parent / "etc" / "horizond.toml").read_bytes(),
                       "etc/horizond.toml")
    levels = {s.pattern: (s.throughput, s.max_latency, s.success_rate) for s in cfg.slos}
    assert levels == {"webhooks-high": (500, 5, 99.9), "webhooks": (1000, 30, 99.5), "appointments": (300, 60, 99.0),
                      "emails": (200, 300, 98.0), "default": (500, 120, 95.0)}
