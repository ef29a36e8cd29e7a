"""The chaos run (scripts/chaos.py) as a test: kills, an OOM kill and a Redis restart lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, child_env


@pytest.mark.slow
def test_chaos_run_accounts_for_every_job():
    result = subprocess.run([sys.executable, "scripts/chaos.py", "--jobs", "1500", "--kills", "15"],
                            capture_output=True, text=True, cwd=ROOT, env=child_env(), timeout=400)
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["lost"] == 0 and summary["unexplained_duplicates"] == 0, result.stdout
    assert summary["completed"] + summary["failed"] == summary["jobs"] == 1501
    assert summary["redis_restarted"] and summary["kills"] == 15
    assert summary["hog_job"] == "failed"  # killed over memory_hard, failed with the cause after its tries
    assert any("memory_hard" in reason for reason in summary["failed_reasons"])
    # at once in normal operation; kills around the Redis restart wait for Redis (counted apart)
    assert summary["back_in_queue_after_kill_s"]["n"] >= 1
    assert summary["back_in_queue_after_kill_s"]["median"] < 0.5
    assert summary["back_in_queue_after_kill_near_redis_restart_s"]["max"] < 1.0  # probed every 0.25 s
    assert result.returncode == 0
