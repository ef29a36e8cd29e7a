"""scripts/bench_slo.py: the committed trace replays exactly, and the report comes from real runs
of each strategy through balance() (a slice of the day, so it takes seconds)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "scripts" / "benchlib"))

import bench_slo  # noqa: E402
import slosim  # noqa: E402
import slotrace  # noqa: E402

AFTERNOON = (14 * 3600, 14 * 3600 + 1200)  # 20 minutes of the day's busiest hours


def _slice(start: float, end: float) -> list:
    """The trace's jobs in [start, end), shifted to begin at 0 (a replay starts at 0)."""
    return [(t - start, q, r) for t, q, r in slotrace.read(bench_slo.TRACE, start, end)]


@pytest.fixture(scope="module")
def afternoon():
    return bench_slo.simulate(_slice(*AFTERNOON), bench_slo.load_config(), AFTERNOON[1] - AFTERNOON[0])


def test_the_report_has_every_strategy_queue_and_figure(afternoon):
    cfg = bench_slo.load_config()
    assert list(afternoon) == ["time", "size", "latency"]
    for run in afternoon.values():
        assert set(run["queues"]) == {q for s in cfg.supervisors for q in s.queues}
        assert set(run["supervisors"]) == {s.name for s in cfg.supervisors}
        for f in run["queues"].values():
            assert f["jobs"] > 0 and f["p50"] <= f["p95"] <= f["p99"] <= f["max"]
            if f["max_latency"] is not None:
                assert 0 <= f["late"] <= f["jobs"] and f["minutes"] == 20
                assert 0 <= f["minutes_violated"] <= 20
        assert run["total"]["process_seconds"] > 0 and run["total"]["jobs_with_slo"] > 0


def test_every_strategy_is_really_replayed_through_the_balancer(afternoon):
    """The strategies decide differently on the same jobs, the same jobs are served by each,
    and a strategy the balancer does not know is refused by balance() itself."""
    time, latency = afternoon["time"], afternoon["latency"]
    assert {q: f["jobs"] for q, f in time["queues"].items()} == {q: f["jobs"] for q, f in latency["queues"].items()}
    assert time["supervisors"]["appointments"] != latency["supervisors"]["appointments"]
    assert time["supervisors"]["default"] == latency["supervisors"]["default"]  # balance "off": no strategy
    with pytest.raises(ValueError, match="unknown balance mode or strategy"):
        bench_slo.simulate(_slice(*AFTERNOON)[:50], bench_slo.load_config(), 60, strategies=("fastest",))


def test_the_trace_replays_the_same_figures_every_time(afternoon):
    again = bench_slo.simulate(_slice(*AFTERNOON), bench_slo.load_config(), AFTERNOON[1] - AFTERNOON[0])
    assert json.dumps(again, sort_keys=True) == json.dumps(afternoon, sort_keys=True)


def test_the_committed_trace_is_the_seeds_and_the_one_the_figures_came_from(tmp_path):
    out = tmp_path / "trace.csv.gz"
    slotrace.write(slotrace.generate(bench_slo.SEED), out)
    assert out.read_bytes() == bench_slo.TRACE.read_bytes()
    data = json.loads(bench_slo.DATA.read_text())
    assert data["simulation"]["trace"]["sha256"] == hashlib.sha256(bench_slo.TRACE.read_bytes()).hexdigest()


def test_every_job_is_served_once_and_never_sooner_than_its_runtime():
    """The replay's own bookkeeping: 30 jobs, one queue; every job finishes exactly once, none
    before it arrived plus its runtime."""
    jobs = [(i * 0.5, "emails", 2.0) for i in range(30)]
    cfg = bench_slo.load_config()
    out = slosim.replay(cfg.supervisor("emails"), jobs, "latency", cfg.slos, 60)
    assert len(out.latencies["emails"]) == 30
    assert all(lat >= 2.0 - 1e-9 for lat in out.latencies["emails"])
    assert out.process_seconds >= 30 * 2.0


def test_a_trace_without_its_header_is_refused_by_name(tmp_path):
    import gzip

    bad = tmp_path / "t.csv.gz"
    bad.write_bytes(gzip.compress(b"1,emails,2\n"))
    with pytest.raises(ValueError, match="t.csv.gz: expected the header 'time,queue,runtime'"):
        slotrace.read(bad)


def test_the_published_check_covers_every_seed_and_layout_and_matches_the_published_day():
    """`check` is what the claim "never more late jobs than time, on days it was not tuned on"
    rests on: its rows are the three days x four layouts, and its seed-19 'seed' row is the same
    replay as the published day's table (one code path, not two numbers that could drift)."""
    import sloreport

    data = json.loads(bench_slo.DATA.read_text())
    rows = data["check"]["rows"]
    assert {(r["seed"], r["layout"]) for r in rows} == {(s, lay) for s in (19, 20, 21) for lay in bench_slo.LAYOUTS}
    day = next(r for r in rows if r["seed"] == 19 and r["layout"] == "seed")
    published = data["simulation"]["strategies"]
    for strategy in ("time", "latency", "greedy", "max"):
        assert day[strategy]["late"] == published[strategy]["total"]["late"]
        assert day[strategy]["process_seconds"] == published[strategy]["total"]["process_seconds"]
    table = sloreport.check_table(rows)
    assert all(f"| {r['seed']}, {r['layout']} |" in table for r in rows)
    wins = sum(r["latency"]["late"] < r["time"]["late"] for r in rows)
    assert f"fewer late jobs on {wins}," in table


def test_the_layouts_are_the_ones_the_report_describes():
    shared20 = bench_slo.layout("shared-20")
    assert [(s.name, s.max_processes, len(s.queues)) for s in shared20.supervisors] == [("all", 20, 7)]
    paired = bench_slo.layout("paired")
    names = [s.name for s in paired.supervisors]
    assert "webhooks-high" not in names and paired.supervisor("webhooks").queues == ("webhooks-high", "webhooks")
    assert (paired.supervisor("webhooks").min_processes, paired.supervisor("webhooks").max_processes) == (5, 50)
    assert paired.slos == bench_slo.load_config().slos
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        bench_slo.layout("nope")


def test_the_yardsticks_do_what_the_report_says():
    """greedy: a backlog gets the whole shift every step up to the cap; max: every pool at the
    cap from the first step, never moved."""
    cfg = bench_slo.load_config()
    sup = cfg.supervisor("webhooks-high")  # 1-20 processes, shift 1 every 3 s
    jobs = [(0.0, "webhooks-high", 10.0)] * 400
    greedy = slosim.replay(sup, jobs, "greedy", cfg.slos, 90)
    assert greedy.peak == sup.max_processes and greedy.starts == sup.max_processes
    assert greedy.scaling_steps >= sup.max_processes  # one worker a step on the way up
    time = slosim.replay(sup, jobs, "time", cfg.slos, 90)
    assert time.peak == sup.max_processes  # "time" ramps as fast on a lone pool's backlog
    top = slosim.replay(sup, jobs, "max", cfg.slos, 90)
    assert top.starts == sup.max_processes and top.scaling_steps == 1 and top.reversals == 0


def test_greedy_keeps_to_the_cap_and_the_floors_where_pools_share_one():
    """Every queue under one supervisor of 20: a storm on one queue while the others trickle."""
    cfg = bench_slo.layout("shared-20")
    sup = cfg.supervisors[0]
    jobs = sorted([(i * 0.01, "webhooks", 0.5) for i in range(3000)]
                  + [(i * 0.5, q, 3.0) for i in range(400) for q in ("appointments", "emails", "default")])
    out = slosim.replay(sup, jobs, "greedy", cfg.slos, 240)
    assert out.peak == sup.max_processes  # the storm takes the room, and no more than the room
    assert {q: len(out.latencies[q]) for q in ("webhooks", "appointments", "emails", "default")} == {
        "webhooks": 3000, "appointments": 400, "emails": 400, "default": 400}  # every job served once
