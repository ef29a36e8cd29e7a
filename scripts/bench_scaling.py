#!/usr/bin/env python3
"""Scale-up reaction of the real daemon: backlog appears -> max reached, and back down.

    .venv/bin/python scripts/bench_scaling.py

Supervisor of issue 4 (queues a, b; auto/size; min 1, max 8, shift 2, cooldown 1 s);
1,500 jobs of 0.2 s land on a at once. Prints the time to reach 7 processes on a, the
scaling steps it took, the peak process count, and the time back to 1 + 1 after the
backlog is removed. (scripts/bench_balancer.py replays a 10-minute bursty load in
simulation, with and without hysteresis.)
"""

from __future__ import annotations

import json
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

from redis import Redis  # noqa: E402
from rq import Queue  # noqa: E402

from horizond.control.ctl import request  # noqa: E402

CONFIG = """
[redis]
url = "{url}"
[control]
socket = "{sock}"
[app]
paths = ["{tests}"]
[supervisors.web]
queues = ["a", "b"]
auto_scaling_strategy = "size"
min_processes = 1
max_processes = 8
balance_max_shift = 2
balance_cooldown = 1
"""


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="horizond-scale-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                   "--dir", str(work)], stdout=subprocess.DEVNULL)
    url, sock = f"redis://127.0.0.1:{port}/0", str(work / "ctl.sock")
    (work / "c.toml").write_text(CONFIG.format(url=url, sock=sock, tests=ROOT / "tests"))
    log = open(work / "log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "horizond", "--config", str(work / "c.toml")], stderr=log,
                              cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    client = Redis.from_url(url)

    def sup():
        return request(sock, "status")["result"]["supervisors"][0]

    try:
        while True:
            try:
                if sup()["processes"] == 2 and all(w["state"] == "idle" for w in sup()["workers"]):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        with client.pipeline() as pipe:
            for i in range(1500):
                Queue("a", connection=client).enqueue("testjobs.sleep_then_record", 0.2, f"j{i}", pipeline=pipe)
            pipe.execute()
        t0, peak, reached = time.monotonic(), 0, None
        while reached is None and time.monotonic() - t0 < 30:
            s = sup()
            peak = max(peak, len(s["workers"]))
            if s["queues"]["a"]["processes"] == 7:
                reached = time.monotonic() - t0
            time.sleep(0.02)
        client.delete("rq:queue:a")
        t1, back = time.monotonic(), None
        while back is None and time.monotonic() - t1 < 30:
            s = sup()
            peak = max(peak, len(s["workers"]))
            if s["queues"]["a"]["processes"] == 1 and not s["retiring"]:
                back = time.monotonic() - t1
            time.sleep(0.02)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        redis_proc.terminate()
        redis_proc.wait(10)
        log.close()
        steps = [json.loads(line) for line in (work / "log").read_text().splitlines()
                 if '"event": "scaled"' in line]
        shutil.rmtree(work, ignore_errors=True)
    ups = [e for e in steps if e["to"] > e["from"] and e["pool"] == "a"]
    print("command: .venv/bin/python scripts/bench_scaling.py")
    print(f"backlog -> 7 processes on a:  {reached:.2f} s  ({len(ups)} scale-up steps: "
          f"{' -> '.join([str(ups[0]['from'])] + [str(e['to']) for e in ups]) if ups else '-'})")
    print(f"peak processes (live + retiring): {peak} (cap 8)")
    print(f"backlog removed -> back to 1 + 1: {back:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
