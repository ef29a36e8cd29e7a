"""Shared by the dashboard tests: users, failed jobs, a real `horizond web` process."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from redis import Redis
from rq import Queue, SimpleWorker

from conftest import ROOT, TESTS, child_env, free_port, wait_until
from horizond.control import webusers
from horizond.observe.slostore import SloStore

PASSWORDS = {"admin": "admin-password-1", "viewer": "viewer-password-1"}


def write_config(tmp_path: Path, redis_url: str, port: int | None = None, extra: str = "") -> Path:
    users = tmp_path / "users"
    for name, password in PASSWORDS.items():
        webusers.add(str(users), name, name, password)
    config = tmp_path / "horizond.toml"
    config.write_text(f'[redis]\nurl = "{redis_url}"\n[app]\npaths = ["{TESTS}"]\n'
                      f'[supervisors.a]\nqueues = ["default"]\n'
                      f'[web]\nlisten = "127.0.0.1:{port or free_port()}"\nusers_file = "{users}"\n{extra}')
    return config


def fail_jobs(redis: Redis, queue: str, tags: list[str]) -> list[str]:
    """Enqueue testjobs.fail(tag) for each tag and let a burst worker fail them for real."""
    q = Queue(queue, connection=redis)
    ids = [q.enqueue("testjobs.fail", tag).id for tag in tags]
    SimpleWorker([q], connection=redis).work(burst=True)
    return ids


SEED_LEVELS = """
[slo.webhooks-high]
throughput = 500
max_latency = 5
success_rate = 99.9
[slo.webhooks]
throughput = 1000
max_latency = 30
success_rate = 99.5
[slo.appointments]
throughput = 300
max_latency = 60
success_rate = 99.0
[slo.emails]
throughput = 200
max_latency = 300
success_rate = 98.0
[slo.default]
throughput = 500
max_latency = 120
success_rate = 95.0
"""  # the seed's table, as etc/horizond.toml carries it


def record_levels(redis: Redis, slos, queue: str, ok: int, failed: int, latency: float, ago: float = 0.0) -> None:
    """Finished jobs counted the way a master counts them (observe/slostore.py): SloStore.record
    for each, then one step's write of the counts to the fleet-wide slices."""
    store, now = SloStore(), time.time()
    for i in range(ok + failed):
        store.record(slos, queue, i < ok, latency, now - ago)
    store.step(redis, "horizond", slos, (queue,), {queue: 0}, now)


class WebProcess:
    def __init__(self, config: Path):
        self.config = config
        self.port = int(re.search(r'listen = "127\.0\.0\.1:(\d+)"', config.read_text())[1])
        self.url = f"http://127.0.0.1:{self.port}/horizon"
        self.log = open(config.parent / "web.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "horizond", "web", "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT)
        wait_until(self._answers, 15, what="the dashboard to answer")

    def _answers(self) -> bool:
        assert self.proc.poll() is None, (Path(self.log.name).read_text())
        try:
            return urllib.request.urlopen(f"{self.url}/login", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
