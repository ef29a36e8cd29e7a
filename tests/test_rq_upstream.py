"""RQ's own test suite, for the installed RQ, passes against the lean worker.

horizond's lean worker promises RQ's end state for every RQ tool; RQ's upstream tests are
the judge. scripts/rq-upstream runs them (unedited, from RQ's sdist) against RQ's stock
classes and against the lean worker side by side, each on its own private redis-server.
Only tests of internals the lean worker replaces may fail, and only when listed in
tests/rq_upstream/expected_failures.txt; a listed test that starts passing fails too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

BUDGET = 420  # seconds; the two runs take about 90 s side by side on 2 cores


@pytest.mark.slow
def test_rq_upstream_suite_passes_against_stock_rq_and_the_lean_worker(tmp_path):
    report = tmp_path / "rq-upstream.json"
    command = [sys.executable, str(ROOT / "scripts" / "rq-upstream"), "--worker", "both", "--json", str(report)]
    # Own session: on timeout the runs, their redis-servers and any worker they left go together.
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"RQ's upstream suite took over {BUDGET}s; logs in .cache/rq-upstream-*/logs\n{out[-3000:]}")
    problems = [line for line in err.splitlines() if line.startswith("rq-upstream: ")]
    assert proc.returncode == 0 and report.exists(), \
        "RQ's upstream suite (logs in .cache/rq-upstream-*/logs):\n" + "\n".join(problems or [err[-3000:]])
    results = json.loads(report.read_text())["results"]
    assert len(results["lean"]["tests"]) > 400, "the upstream modules were not all collected"
