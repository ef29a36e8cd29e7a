"""Three horizond nodes and the demo workload on one machine; prints `status --fleet` as it runs.

    scripts/fleet-demo                    # 60 s
    FLEET_DEMO_DURATION=20 scripts/fleet-demo

A private redis-server on a free loopback port (never 6379), three masters with distinct
`[fleet] node`s on it (sockets and logs under a temporary directory, kept if something fails),
the demo enqueuer (python -m horizond.demo), and every few seconds `horizonctl status --fleet`
from node-1. Half-way through, node-2 pauses `webhooks` fleet-wide and node-3 continues it later,
so the merged view shows a fleet command. Everything it started is stopped on exit.
"""

from __future__ import annotations

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
PY = sys.executable
CONFIG = """
[redis]
url = "{url}"
[control]
socket = "{dir}/{node}.sock"
[fleet]
node = "{node}"
heartbeat = 1
[defaults]
tries = 3
backoff = [1]
[supervisors.webhooks]
queues = ["webhooks-high", "webhooks"]
min_processes = 1
max_processes = 3
fleet_max_processes = 6
[supervisors.interactive]
queues = ["mcp-high", "appointments", "emails", "cache"]
balance = "off"          # one pool over the four queues, in order
max_processes = 2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctl(work: Path, node: str, *args: str) -> str:
    out = subprocess.run([PY, "-m", "horizond.control.ctl", "--socket", str(work / f"{node}.sock"), *args],
                         capture_output=True, text=True, timeout=30)
    return (out.stdout + out.stderr).rstrip()


def main() -> int:
    duration = float(os.environ.get("FLEET_DEMO_DURATION", "60"))
    if not shutil.which("redis-server"):
        print("fleet-demo: redis-server not found: apt-get install redis-server", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="horizond-fleet-demo-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ok = False
    try:
        procs.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no"], stdout=subprocess.DEVNULL, cwd=work))
        time.sleep(0.3)
        nodes = ["node-1", "node-2", "node-3"]
        for node in nodes:
            (work / f"{node}.toml").write_text(CONFIG.format(url=url, dir=work, node=node))
            log = open(work / f"{node}.log", "wb")
            procs.append(subprocess.Popen([PY, "-m", "horizond", "--config", str(work / f"{node}.toml")],
                                          stdout=log, stderr=subprocess.STDOUT, env=env))
        procs.append(subprocess.Popen([PY, "-m", "horizond.demo", "--redis-url", url, "--rate", "30"],
                                      stdout=subprocess.DEVNULL, env=env))
        print(f"fleet-demo: 3 nodes on {url}; logs in {work}", flush=True)
        started = time.monotonic()
        paused = continued = False
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(5)
            if not paused and elapsed > duration / 3:
                print("\n$ horizonctl pause --fleet webhooks   (on node-2)\n" + ctl(work, "node-2", "pause", "--fleet",
                                                                                  "webhooks"), flush=True)
                paused = True
            elif paused and not continued and elapsed > 2 * duration / 3:
                print("\n$ horizonctl continue --fleet webhooks   (on node-3)\n" + ctl(work, "node-3", "continue",
                                                                                     "--fleet", "webhooks"), flush=True)
                continued = True
            print(f"\n--- {elapsed:.0f} s: horizonctl status --fleet (on node-1)\n"
                  + ctl(work, "node-1", "status", "--fleet"), flush=True)
        ok = True
    except KeyboardInterrupt:
        ok = True
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
