"""The real daemon on a slice of the trace (scripts/bench_slo.py real): the simulation's check.

Starts a private redis-server on a free loopback port (never 6379) and horizond with the
supervisors and [slo] tables of etc/horizond.toml, every supervisor set to the strategy under
test; enqueues the slice's jobs at their recorded pace (a job sleeps its recorded runtime:
scripts/benchlib/slojobs.py); samples `status` over the control socket every second for the
process count; when the slice is over and the queues have drained, reads every job's own
enqueue and end timestamps from Redis. Everything it started is stopped on the way out.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import slostats
import slotrace
from redis import Redis
from rq import Queue

from horizond.control.ctlclient import request
from horizond.core import config, slo

ROOT = Path(__file__).resolve().parent.parent.parent
STORM = 68_340.0  # 18:59 in the trace: the evening's webhook storm (1,675 jobs in its second minute)
DRAIN_LIMIT = 300.0  # seconds to wait for the queues to empty after the slice


def run(args, cfg: config.Config, trace: Path) -> dict:
    start = STORM if args.start is None else args.start
    seconds = args.minutes * 60
    jobs = slotrace.read(trace, start, start + seconds)
    work = Path(tempfile.mkdtemp(prefix="horizond-slo-"))
    port = _free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    url, sock = f"redis://127.0.0.1:{port}/0", str(work / "ctl.sock")
    (work / "horizond.toml").write_text(config_text(cfg, url, sock, args.strategy))
    log = open(work / "daemon.log", "wb")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HORIZOND_SOCKET")}
    env["PYTHONPATH"] = str(ROOT)
    daemon = None
    load = os.getloadavg()[0]
    try:
        client = Redis.from_url(url)
        _wait(lambda: client.ping(), 10, "redis-server")
        daemon = subprocess.Popen([sys.executable, "-m", "horizond", "--config", str(work / "horizond.toml")],
                                  stderr=log, cwd=ROOT, env=env)
        floors = sum(config_floor(s) for s in cfg.supervisors)
        _wait(lambda: _processes(sock) >= floors, 60, f"horizond at its floors ({floors} workers)")
        sampler = Sampler(sock)
        sampler.start()
        ids = replay(client, jobs, start)
        _wait(lambda: _drained(client, sock, cfg), DRAIN_LIMIT, "the queues to drain", fail=False)
        sampler.stop()
        outcome = outcomes(client, ids, cfg)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(120)
        redis_proc.terminate()
        redis_proc.wait(10)
        log.close()
        scaled = sum('"event": "scaled"' in line for line in (work / "daemon.log").read_text().splitlines())
        shutil.rmtree(work, ignore_errors=True)
    with_slo = [f for f in outcome["queues"].values() if f.get("max_latency") is not None]
    return {
        "command": f"scripts/bench_slo.py real --minutes {args.minutes:g} --strategy {args.strategy}"
                   + (f" --start {args.start:g}" if args.start is not None else "")
                   + (f" --layout {args.layout}" if getattr(args, "layout", "seed") != "seed" else "") + " --write",
        "layout": getattr(args, "layout", "seed"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
        "machine": platform.machine(), "load_at_start": load, "strategy": args.strategy,
        "start": start, "seconds": seconds, "jobs": len(jobs), "queues": outcome["queues"],
        "total": {"late": sum(f["late"] for f in with_slo), "jobs_with_slo": sum(f["jobs"] for f in with_slo),
                  "process_seconds": round(sampler.process_seconds, 1), "scale_events": scaled,
                  "unfinished": outcome["unfinished"], "sampled_seconds": round(sampler.seconds, 1)},
    }


def config_text(cfg: config.Config, url: str, sock: str, strategy: str) -> str:
    """A config with the layout's supervisors and the seed's service levels, the strategy under
    test, and this run's private Redis, socket and job module."""
    lines = [f'[redis]\nurl = "{url}"\nprefix = "slobench"\n', f'[control]\nsocket = "{sock}"\n',
             f'[app]\npaths = ["{ROOT / "scripts" / "benchlib"}"]\n']
    for t in cfg.slos:
        lines.append(f'[slo."{t.pattern}"]\nthroughput = {t.throughput}\nmax_latency = {t.max_latency}\n'
                     f'success_rate = {t.success_rate}\nwindow = {t.window}\n')
    for s in cfg.supervisors:
        queues = ", ".join(json.dumps(q) for q in s.queues)
        lines.append(f'[supervisors.{s.name}]\nqueues = [{queues}]\nbalance = "{s.balance}"\n'
                     f'auto_scaling_strategy = "{strategy}"\nmin_processes = {s.min_processes}\n'
                     f'max_processes = {s.max_processes}\nbalance_max_shift = {s.balance_max_shift}\n'
                     f'balance_cooldown = {s.balance_cooldown}\ntimeout = {s.timeout}\nmemory = {s.memory}\n')
    return "\n".join(lines)


def config_floor(s: config.SupervisorConfig) -> int:
    pools = 1 if s.balance == "off" else len(s.queues)
    return min(s.max_processes, pools * s.min_processes)


def replay(client: Redis, jobs: list, start: float) -> dict[str, list[str]]:
    """Enqueue each job at its recorded time after the start (those due together in one pipeline)."""
    queues: dict[str, Queue] = {}
    ids: dict[str, list[str]] = {}
    t0, i = time.monotonic(), 0
    while i < len(jobs):
        due = time.monotonic() - t0 + start
        batch = []
        while i < len(jobs) and jobs[i][0] <= due:
            batch.append(jobs[i])
            i += 1
        if batch:
            with client.pipeline() as pipe:
                for _, q, runtime in batch:
                    queue = queues.setdefault(q, Queue(q, connection=client))
                    job = queue.enqueue("slojobs.sleep", runtime, result_ttl=3600, pipeline=pipe)
                    ids.setdefault(q, []).append(job.id)
                pipe.execute()
        else:
            time.sleep(min(0.01, max(0.0, jobs[i][0] - due)))
    return ids


def outcomes(client: Redis, ids: dict[str, list[str]], cfg: config.Config) -> dict:
    """Per queue, each job's latency from its own enqueued_at and ended_at."""
    queues, unfinished = {}, 0
    for q, job_ids in ids.items():
        with client.pipeline() as pipe:
            for job_id in job_ids:
                pipe.hmget(f"rq:job:{job_id}", "enqueued_at", "ended_at")
            stamps = pipe.execute()
        latencies, ends = [], []
        for enqueued, ended in stamps:
            if not enqueued or not ended:
                unfinished += 1
                continue
            begin, end = _when(enqueued), _when(ended)
            latencies.append(end - begin)
            ends.append(end)
        first = min(ends, default=0.0)
        target = slo.slo_for(cfg.slos, q)
        figures = slostats.queue_figures(latencies, [e - first for e in ends], target, 0)
        queues[q] = {k: v for k, v in figures.items() if k not in ("minutes", "minutes_violated",
                                                                  "worst_window_good_pct")}
    return {"queues": queues, "unfinished": unfinished}


class Sampler(threading.Thread):
    """Live worker processes (retiring ones included) summed over the supervisors, every second."""

    def __init__(self, sock: str):
        super().__init__(daemon=True)
        self.sock, self.process_seconds, self.seconds = sock, 0.0, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._halt.wait(1.0):
            now = time.monotonic()
            self.process_seconds += _processes(self.sock) * (now - last)
            self.seconds += now - last
            last = now

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _processes(sock: str) -> int:
    try:
        status = request(sock, "status")["result"]
    except (OSError, KeyError, ValueError):
        return 0
    return sum(len(s["workers"]) for s in status["supervisors"])


def _drained(client: Redis, sock: str, cfg: config.Config) -> bool:
    queued = sum(client.llen(f"rq:queue:{q}") for s in cfg.supervisors for q in s.queues)
    busy = sum(s["busy"] for s in request(sock, "status")["result"]["supervisors"])
    return queued == 0 and busy == 0


def _when(stamp: bytes) -> float:
    return datetime.fromisoformat(stamp.decode().replace("Z", "+00:00")).timestamp()


def _wait(predicate, timeout: float, what: str, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    if fail:
        raise RuntimeError(f"bench_slo real: gave up waiting for {what} after {timeout:g} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
