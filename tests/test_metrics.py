"""The pure metrics bookkeeping: what is saved to Redis comes back with the same counts."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from horizond.observe.metrics import BUCKETS, Metrics

jobs = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["f", "g", None]), st.booleans(),
                          st.one_of(st.none(), st.floats(0, 400)), st.one_of(st.none(), st.floats(0, 50)),
                          st.floats(0, 7200)), max_size=60)


def fill(metrics: Metrics, batch, offset: float = 0.0) -> Metrics:
    """Record the jobs in time order (the master's clock only moves forward)."""
    for queue, func, ok, runtime, wait, at in sorted(batch, key=lambda job: job[-1]):
        at += offset
        metrics.record(queue, "sup", func, ok, runtime, wait, 1_000_000.0 + at)
    return metrics


def counts(metrics: Metrics) -> dict:
    return {key: (t.processed, t.failed, t.runtime_count, t.wait_count, tuple(t.buckets),
                  round(t.runtime_sum, 6), sum(m[1] for m in t.minutes))
            for key, t in list(metrics.queues.items()) + list(metrics.jobs.items())}


@settings(max_examples=200)
@given(jobs)
def test_a_dump_restored_into_a_fresh_master_gives_the_same_numbers(batch):
    before = fill(Metrics(), batch)
    after = Metrics()
    after.merge(json.loads(json.dumps(before.dump())))
    assert counts(after) == counts(before)
    now = 1_000_000.0 + 7200
    assert after.queue_rows(now, {}, {}) == before.queue_rows(now, {}, {})


@settings(max_examples=200)
@given(jobs, jobs)
def test_restoring_adds_to_what_was_counted_meanwhile(old, new):
    """Redis can come back after jobs already ran in the new master: nothing is lost either way."""
    both = fill(fill(Metrics(), old), new, offset=7300)
    restored = fill(Metrics(), new, offset=7300)
    restored.merge(fill(Metrics(), old).dump())
    for key, tally in both.queues.items():
        got = restored.queues[key]
        assert (got.processed, got.failed, got.buckets) == (tally.processed, tally.failed, tally.buckets)
        assert {m[0]: m[1:] for m in got.minutes} == {m[0]: m[1:] for m in tally.minutes}


def test_memory_is_bounded_by_queues_and_functions_not_jobs():
    small = fill(Metrics(), [("a", "f", True, 0.01, 0.1, i) for i in range(10)])
    large = fill(Metrics(), [("a", "f", i % 7 > 0, 0.01 * (i % 50), 0.1, i * 0.5) for i in range(100_000)])
    assert len(json.dumps(large.dump())) < 2 * len(json.dumps(small.dump())) + 60 * 20 * 2
    tally = large.queues["a"]
    assert len(tally.buckets) == len(BUCKETS)
    # every job counted once, in the cumulative histogram Prometheus reads too (runtimes 0-0.49 s)
    assert (tally.processed, tally.failed, tally.buckets[-1]) == (100_000, 14_286, 100_000)
    assert tally.buckets[BUCKETS.index(0.5)] == 100_000 and tally.buckets[0] == 2_000  # runtime 0 s: i % 50 == 0


def test_an_unknown_format_is_refused_without_changing_anything():
    metrics = fill(Metrics(), [("a", "f", True, 0.1, 0.1, 0)])
    before = counts(metrics)
    try:
        metrics.merge({"version": 99})
    except ValueError as exc:
        assert "version 99" in str(exc)
    else:
        raise AssertionError("a version 99 dump was accepted")
    assert counts(metrics) == before
