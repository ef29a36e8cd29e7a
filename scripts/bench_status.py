#!/usr/bin/env python3
"""Round-trip latency of `status` over the control socket, beside `rq info`.

    .venv/bin/python scripts/bench_status.py [--rounds 500]

Starts a private redis-server on a free loopback port and horizond on
etc/horizond.toml (16 workers), then times:
  - the status request alone (a client in this process, socket round trip);
  - `horizonctl status --json` as a user runs it (process start included);
  - `rq info` against the same Redis (RQ's nearest equivalent), for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from horizond.control.ctl import request  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
    return f"p50 {pick(0.5):7.2f} ms  p95 {pick(0.95):7.2f} ms  p99 {pick(0.99):7.2f} ms  (n={len(ms)})"


def timed_runs(cmd: list[str], n: int, env: dict) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--cli-rounds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="horizond-bench-"))
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    sock = str(work / "ctl.sock")
    env = dict(os.environ, REDIS_URL=url, HORIZOND_SOCKET=sock)
    daemon = subprocess.Popen([sys.executable, "-m", "horizond", "--config", str(ROOT / "etc/horizond.toml")],
                              env=env, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = request(sock, "status")["result"]
                workers = sum(len([w for w in s["workers"] if w["state"] == "idle"]) for s in status["supervisors"])
                if workers >= sum(s["target"] for s in status["supervisors"]):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("horizond did not come up")
            time.sleep(0.1)
        print(f"horizond up: {workers} workers in {len(status['supervisors'])} supervisors; Redis on :{port}")
        for _ in range(20):  # warm-up
            request(sock, "status")
        samples = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            request(sock, "status")
            samples.append(time.perf_counter() - start)
        print(f"status request (socket round trip)   {percentiles(samples)}")
        ctl = [str(Path(sys.executable).parent / "horizonctl"), "--socket", sock, "status", "--json"]
        print(f"horizonctl status --json (process)   {percentiles(timed_runs(ctl, args.cli_rounds, env))}")
        rq = [str(Path(sys.executable).parent / "rq"), "info", "-u", url]
        print(f"rq info (process, for scale)         {percentiles(timed_runs(rq, args.cli_rounds, env))}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
