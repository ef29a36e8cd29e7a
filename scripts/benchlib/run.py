"""Side-by-side throughput of horizond, rq worker-pool and Celery (scripts/bench; see docs/benchmarks.md).

Every contender drains the same pre-enqueued jobs with the same number of
processes, against a private redis-server (never 6379), in alternating order,
round after round. A run is timed from launching the contender's command to
the last job finished; Redis commands are INFO commandstats deltas over the
run minus the bench's own polling.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from redis import Redis
from rq import Queue

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable
POLL = 0.01


class Bench:
    def __init__(self, work: Path, celery: str | None, procs: int):
        self.work = work
        self.procs = procs
        self.celery = celery
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(work)], stdout=subprocess.DEVNULL)
        self.redis = Redis.from_url(self.url)
        self.polls = 0
        wait_for(lambda: self._ping(), 10, "redis-server")
        self.env = dict(os.environ, PYTHONPATH=str(HERE), BENCH_REDIS_URL=self.url)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(name, None)

    def _ping(self) -> bool:
        try:
            return self.redis.ping()
        except Exception:
            return False

    def close(self) -> None:
        self.redis_proc.terminate()
        self.redis_proc.wait(10)

    # --- contenders: (argv, how to count finished jobs) -----------------------------

    def horizond_cmd(self, procs: int, preload: tuple[str, ...] = (), worker_class: str | None = None) -> list[str]:
        sock = self.work / "ctl.sock"
        config = self.work / f"bench-{procs}-{worker_class or 'lean'}-{'-'.join(preload) or 'none'}.toml"
        config.write_text(f"""
[redis]
url = "{self.url}"
[control]
socket = "{sock}"
[app]
paths = ["{HERE}"]
preload = {json.dumps(list(preload))}
[metrics]
snapshot_interval = 60
[supervisors.bench]
queues = ["default"]
min_processes = {procs}
max_processes = {procs}
balance = "off"
""" + (f'worker_class = "{worker_class}"\n' if worker_class else ""))
        return [PY, "-m", "horizond", "--config", str(config), "--log-level", "warning"]

    def contenders(self) -> dict[str, list[str]]:
        rq = str(Path(PY).parent / "rq")
        out = {
            "horizond": self.horizond_cmd(self.procs),
            "horizond-stock": self.horizond_cmd(self.procs, worker_class="rq.worker.SimpleWorker"),
            "rq-pool-simple": [rq, "worker-pool", "-n", str(self.procs), "-w", "rq.worker.SimpleWorker",
                               "-u", self.url, "-q", "default"],
            "rq-pool-fork": [rq, "worker-pool", "-n", str(self.procs), "-u", self.url, "-q", "default"],
        }
        if self.celery:
            out["celery"] = [self.celery, "-A", "benchcelery", "worker", "-c", str(self.procs), "-P", "prefork",
                             "--loglevel", "WARNING", "-Q", "celery"]
        return out

    def enqueue(self, name: str, func: str, n: int, flush: bool = True) -> None:
        if flush:
            self.redis.flushall()
        if name == "celery":  # with Celery's own interpreter: Celery is not in horizond's venv
            python = str(Path(self.celery).parent / "python")
            subprocess.run([python, str(HERE / "benchcelery.py"), func, str(n)], env=self.env, cwd=HERE,
                           check=True, timeout=300)
            return
        queue = Queue("default", connection=self.redis)
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(f"benchjobs.{func}", result_ttl=500)
                                for _ in range(min(1000, n - start))])

    def finished(self, name: str) -> int:
        self.polls += 1
        if name == "celery":
            return int(self.redis.get("bench:celery:done") or 0)
        return self.redis.zcard("rq:finished:default")

    def commands(self) -> int:
        stats = self.redis.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_"))

    # --- one run ------------------------------------------------------------------

    def run(self, name: str, argv: list[str], func: str, n: int, idle: float) -> dict:
        self.enqueue(name, func, n)
        self.redis.config_resetstat()
        self.polls = 0
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=self.env, cwd=HERE, stdout=subprocess.DEVNULL,
                                stderr=open(self.work / f"{name}.log", "ab"), start_new_session=True)
        try:
            deadline = started + max(120.0, n / 20)
            while (done := self.finished(name)) < n:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} after {done} of {n} jobs; "
                                       f"see {self.work / (name + '.log')}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name}: only {done} of {n} jobs after {deadline - started:.0f} s")
                time.sleep(POLL)
            elapsed = time.perf_counter() - started
            polls = self.polls
            total = self.commands() - polls - 1  # minus our polls and this INFO
            if name == "celery":
                total -= n  # the done-counter INCRs
            row = {"name": name, "func": func, "jobs": n, "seconds": elapsed, "jobs_per_s": n / elapsed,
                   "commands_per_job": total / n}
            if idle:
                row.update(master_idle(proc.pid, idle))
            return row
        finally:
            stop(proc)


def master_idle(pid: int, seconds: float) -> dict:
    """CPU share of one core and RSS of the contender's top process while its queue is empty."""
    master = psutil.Process(pid)
    time.sleep(1.0)  # let the last job's bookkeeping settle
    cpu0, t0 = sum(master.cpu_times()[:2]), time.perf_counter()
    time.sleep(seconds)
    cpu = (sum(master.cpu_times()[:2]) - cpu0) / (time.perf_counter() - t0)
    return {"master_cpu_pct": 100 * cpu, "master_rss_mb": master.memory_info().rss / 2**20}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(POLL)
    raise RuntimeError(f"timed out waiting for {what}")


def find_celery(given: str | None) -> str | None:
    if given:
        return given
    for candidate in (ROOT / ".venv-celery" / "bin" / "celery", shutil.which("celery")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None
