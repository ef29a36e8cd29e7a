"""Side-by-side runs of horizond, rq worker-pool and Celery (scripts/bench; see docs/benchmarks.md).

Every contender drains the same pre-enqueued jobs with the same number of processes, against
a private redis-server (never 6379), in alternating order, round after round. A run is timed
from launching the contender's command to the last job done. Redis figures are deltas of
INFO over the run minus the bench's own polling: commands from `commandstats` (commands inside
MULTI and inside scripts count one each), round trips from `total_writes_processed` (one per
reply Redis flushes to a client: a pipeline, a MULTI/EXEC or a script call is one).
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
from rq import Queue, Retry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PY = sys.executable
POLL = 0.01
RESULT_TTL = 500  # the result TTL of the success path (RQ's default); Celery keeps results as long

# The paths a job can take, as (job function, enqueue options, where a done job shows).
PATHS = {
    "noop": ("noop", {"result_ttl": RESULT_TTL}, "finished"),
    "ttl0": ("noop", {"result_ttl": 0}, "gone"),
    "fail": ("fail", {}, "failed"),
    "retry": ("fail", {"retry": Retry(max=1, interval=600)}, "scheduled"),
    "io5": ("io5", {"result_ttl": RESULT_TTL}, "finished"),
}
CELERY_PATHS = ("noop", "io5")


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
        self.poll_commands = self.poll_trips = 0
        wait_for(lambda: self._ping(), 10, "redis-server")
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(HERE), str(ROOT))), BENCH_REDIS_URL=self.url)
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

    def launch(self, argv: list[str], tag: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(argv, env=env or self.env, cwd=HERE, stdout=subprocess.DEVNULL,
                                stderr=open(self.work / f"{tag}.log", "ab"), start_new_session=True)

    # --- contenders ---------------------------------------------------------------

    def horizond_cmd(self, procs: int, preload: tuple[str, ...] = (), worker_class: str | None = None) -> list[str]:
        config = self.work / f"bench-{procs}-{worker_class or 'lean'}-{'-'.join(preload) or 'none'}.toml"
        config.write_text(self.horizond_config(preload) + f"""
[supervisors.bench]
queues = ["default"]
min_processes = {procs}
max_processes = {procs}
balance = "off"
""" + (f'worker_class = "{worker_class}"\n' if worker_class else ""))
        return [PY, "-m", "horizond", "--config", str(config), "--log-level", "warning"]

    def horizond_config(self, preload: tuple[str, ...] = ()) -> str:
        return f"""
[redis]
url = "{self.url}"
[control]
socket = "{self.work / 'ctl.sock'}"
[app]
paths = ["{HERE}"]
preload = {json.dumps(list(preload))}
[metrics]
snapshot_interval = 60
"""

    def rq_pool_cmd(self, procs: int, queues: list[str], simple: bool = True) -> list[str]:
        worker = ["-w", "rq.worker.SimpleWorker"] if simple else []
        return [str(Path(PY).parent / "rq"), "worker-pool", "-n", str(procs), *worker, "-u", self.url,
                "--logging-level", "WARNING", *queues]

    def contenders(self) -> dict[str, list[str]]:
        out = {
            "horizond": self.horizond_cmd(self.procs),
            "horizond-stock": self.horizond_cmd(self.procs, worker_class="rq.worker.SimpleWorker"),
            "rq-pool-simple": self.rq_pool_cmd(self.procs, ["default"]),
            "rq-pool-fork": self.rq_pool_cmd(self.procs, ["default"], simple=False),
        }
        if self.celery:
            out["celery"] = [self.celery, "-A", "benchcelery", "worker", "-c", str(self.procs), "-P", "prefork",
                             "--loglevel", "WARNING", "-Q", "celery"]
        return out

    # --- jobs ---------------------------------------------------------------------

    def enqueue(self, name: str, path: str, n: int, flush: bool = True, connection: Redis | None = None) -> None:
        if flush:
            self.redis.flushall()
        func, options, _ = PATHS[path]
        if name == "celery":  # with Celery's own interpreter: Celery is not in horizond's venv
            python = str(Path(self.celery).parent / "python")
            subprocess.run([python, str(HERE / "benchcelery.py"), func, str(n)], env=self.env, cwd=HERE,
                           check=True, timeout=300)
            return
        queue = Queue("default", connection=connection or self.redis)
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(f"benchjobs.{func}", **options)
                                for _ in range(min(1000, n - start))])

    def done(self, name: str, path: str, n: int, connection: Redis | None = None) -> int:
        """Jobs done so far, as the contender leaves them; counted as the bench's own traffic."""
        redis = connection or self.redis
        self.poll_trips += 1
        if name == "celery":  # each task's result write (Celery's Redis backend: SETEX, then PUBLISH)
            self.poll_commands += 1
            return redis.info("commandstats").get("cmdstat_setex", {}).get("calls", 0)
        queue = Queue("default", connection=redis)
        where = PATHS[path][2]
        if where == "gone":  # result_ttl=0: the job is deleted; count what is neither waiting nor running
            pipe = redis.pipeline(transaction=False)
            pipe.llen(queue.key).llen(queue.intermediate_queue_key).zcard(queue.started_job_registry.key)
            self.poll_commands += 3
            return n - sum(pipe.execute())
        self.poll_commands += 1
        registry = {"finished": queue.finished_job_registry, "failed": queue.failed_job_registry,
                    "scheduled": queue.scheduled_job_registry}[where]
        return redis.zcard(registry.key)

    def redis_counts(self) -> tuple[int, int]:
        """(commands, round trips) since CONFIG RESETSTAT, the bench's own excluded."""
        info = self.redis.info("all")
        commands = sum(v["calls"] for k, v in info.items() if k.startswith("cmdstat_"))
        return commands - 1 - self.poll_commands, info["total_writes_processed"] - 1 - self.poll_trips

    # --- one run ------------------------------------------------------------------

    def run(self, name: str, argv: list[str], path: str, n: int) -> dict:
        self.enqueue(name, path, n)
        self.redis.config_resetstat()
        self.poll_commands = self.poll_trips = 0
        started = time.perf_counter()
        proc = self.launch(argv, name)
        master = psutil.Process(proc.pid)
        drain_start = None
        try:
            deadline = started + max(120.0, n / 20)
            while (done := self.done(name, path, n)) < n:
                if drain_start is None and done > 0:
                    drain_start = (time.perf_counter(), _cpu(master))
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} after {done} of {n} jobs; "
                                       f"see {self.work / (name + '.log')}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{name}: only {done} of {n} jobs after {deadline - started:.0f} s")
                time.sleep(POLL)
            ended, master_cpu = time.perf_counter(), _cpu(master)
            elapsed = ended - started
            commands, trips = self.redis_counts()
            row = {"name": name, "path": path, "jobs": n, "seconds": elapsed, "jobs_per_s": n / elapsed,
                   "commands_per_job": commands / n, "round_trips_per_job": trips / n}
            if drain_start:  # the top process alone, from the first job done to the last
                row["master_drain_cpu_pct"] = 100 * (master_cpu - drain_start[1]) / (ended - drain_start[0])
            return row
        finally:
            stop(proc)


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of the process itself (not its children)."""
    t = proc.cpu_times()
    return t.user + t.system


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
