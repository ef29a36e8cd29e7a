"""scripts/bench's pure parts: the generated docs/benchmarks.md and its verdicts.

The document, its JSON and the README headline are checked against each other, so a figure
typed by hand into any of them (or a doc left behind by a newer JSON) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "benchlib"))

import report  # noqa: E402


def _row(name, path, jobs_per_s, commands, trips, cpu=None, rnd=1):
    row = {"name": name, "path": path, "jobs": 1000, "round": rnd, "seconds": 1000 / jobs_per_s,
           "jobs_per_s": jobs_per_s, "commands_per_job": commands, "round_trips_per_job": trips}
    if cpu is not None:
        row["master_drain_cpu_pct"] = cpu
    return row


@pytest.fixture
def run():
    return {"meta": json.loads((ROOT / "docs" / "benchmarks.json").read_text())["meta"],
            "paths": [_row("horizond", "noop", 1300.0, 23.5, 2.75, cpu=6.25),
                      _row("horizond", "noop", 1100.0, 24.5, 3.25, cpu=3.75, rnd=2),
                      _row("rq-pool-simple", "noop", 500.0, 57.0, 20.0),
                      _row("celery", "noop", 1000.0, 12.0, 5.0),
                      _row("horizond", "fail", 900.0, 31.0, 3.0)]}


def test_verdicts_use_the_median_over_rounds_and_name_the_gap(run):
    verdicts = {label: (measured, verdict) for label, _, measured, verdict in report.target_rows(run)}
    assert verdicts["Redis commands per job, success (no-op, result_ttl 500 s)"] == ("24.00", "met")
    assert verdicts["round trips per job, success (no-op, result_ttl 500 s)"] == ("3.00", "met")
    assert verdicts["Redis commands per job, failure into the failed registry"] == ("31.00", "gap: 1.00 over")
    assert verdicts["no-op throughput vs `rq worker-pool -n 2 -w rq.worker.SimpleWorker`"] == ("2.40x",
                                                                                            "gap: 0.10x short")
    assert verdicts["no-op throughput vs Celery prefork `-c 2`"] == ("1.20x", "gap: 0.30x short")
    assert verdicts["master CPU while 2 workers drain no-op jobs"] == ("5.00% of a core", "met")
    assert not any("result_ttl=0" in label for label in verdicts)  # not measured: no verdict


def test_the_document_carries_the_runs_figures_and_command(run):
    text = report.markdown(run)
    assert run["meta"]["command"] in text and run["meta"]["date"] in text
    assert "| horizond (lean worker) | 1000 | 1200 | 1300 / 1100 | 2.40x | 24.0 |" in text
    assert "5.0% of one core (median; each round: 6.2%, 3.8%)" in text


def test_headline_is_replaced_between_its_markers_only():
    before = f"intro {report.MARK_BEGIN}old figure{report.MARK_END} outro"
    assert report.replace_headline(before, report.MARK_BEGIN + "new" + report.MARK_END) == \
        f"intro {report.MARK_BEGIN}new{report.MARK_END} outro"


def test_committed_doc_and_readme_are_what_the_committed_json_generates():
    data = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.markdown(data)
    assert report.headline(data) in (ROOT / "README.md").read_text()


def test_bench_script_names_a_missing_python_and_honours_PYTHON():
    env = dict(os.environ, PYTHON="/nonexistent/python")
    missing = subprocess.run([ROOT / "scripts" / "bench", "--help"], env=env, capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 1 and "/nonexistent/python" in missing.stderr
    env["PYTHON"] = sys.executable
    ok = subprocess.run([ROOT / "scripts" / "bench", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--markdown" in ok.stdout, ok.stderr


def test_monitor_lines_group_into_requests_with_their_commands():
    import jobtrace

    def line(cmd, port=1, lua=False):
        return {"command": cmd, "client_address": "lua" if lua else "127.0.0.1", "client_port": "" if lua else port,
                "client_type": "lua" if lua else "tcp"}

    lines = [line("BLMOVE rq:queue:default"), line("MULTI", 2), line("HGETALL x", 1), line("HSET a b", 2),
             line("EVALSHA abc 1", 2), line("ZADD z 1 a", lua=True), line("EXEC", 2), line("EVALSHA def 0", 1),
             line("HSET w s", lua=True), line("EXPIRE w 1", lua=True)]
    assert jobtrace.requests(lines) == [["BLMOVE"], ["HGETALL"], ["MULTI/EXEC", "HSET", "EVALSHA", "ZADD"],
                                        ["EVALSHA", "HSET", "EXPIRE"]]
    rows = jobtrace.per_job(lines, jobs=2)
    assert {"request": "EVALSHA: HSET, EXPIRE", "commands": 3, "per_job": 0.5} in rows
    assert {"request": "MULTI/EXEC: HSET, EVALSHA, ZADD", "commands": 5, "per_job": 0.5} in rows
