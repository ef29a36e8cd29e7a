#!/usr/bin/env python3
"""Chaos run: thousands of jobs while workers are SIGKILLed, one is killed over memory_hard,
and Redis (append-only file on) is restarted mid-run. Then every job is accounted for.

    .venv/bin/python scripts/chaos.py [--jobs 3000] [--kills 30]

Exit 0 when no job is lost and every duplicate run is explained by a kill.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from rq.job import Job  # noqa: E402

from horizond.control.ctl import request  # noqa: E402

CONFIG = """
[redis]
url = "{url}"
[control]
socket = "{sock}"
[app]
paths = ["{scripts}"]
[master]
shutdown_grace = 5
[defaults]
tries = 3
timeout = 30
[supervisors.single]
queues = ["c1"]
min_processes = 3
max_processes = 3
[supervisors.multi]
queues = ["c2", "c3"]
balance = "off"
min_processes = 2
max_processes = 2
[supervisors.heavy]
queues = ["c4"]
min_processes = 2
max_processes = 2
memory = 128
memory_hard = 200
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProc:
    def __init__(self, port: int, workdir: Path):
        self.port, self.workdir = port, workdir
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""], stdout=subprocess.DEVNULL)
        client = Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def restart(self):
        self.proc.terminate()  # a clean shutdown: Redis flushes its AOF first
        self.proc.wait(30)
        self.start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def workers(sock: str) -> list[dict]:
    try:
        status = request(sock, "status")["result"]
    except Exception:
        return []
    return [w for s in status["supervisors"] for w in s["workers"] if w["state"] in ("idle", "busy")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="horizond-chaos-"))
    redis_proc = RedisProc(free_port(), work)
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    sock = str(work / "ctl.sock")
    (work / "horizond.toml").write_text(CONFIG.format(url=url, sock=sock, scripts=ROOT / "scripts"))
    log = open(work / "horizond.log", "wb")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "HORIZOND_SOCKET", "NOTIFY_SOCKET")}
    daemon = subprocess.Popen([sys.executable, "-m", "horizond", "--config", str(work / "horizond.toml")],
                              stderr=log, env=env, cwd=ROOT)
    client = Redis.from_url(url)
    kills: list[tuple[float, str | None]] = []
    try:
        while len(workers(sock)) < 7:
            time.sleep(0.1)
        queues = {name: Queue(name, connection=client) for name in ("c1", "c2", "c3", "c4")}
        ids = []
        started = time.monotonic()
        for i in range(args.jobs):
            name = rng.choice(list(queues))
            ids.append(queues[name].enqueue("chaosjobs.work", i, rng.uniform(0.005, 0.03)).id)
        hog_index = args.jobs
        ids.append(queues["c4"].enqueue("chaosjobs.hog", hog_index, 400).id)
        restarted = False
        outage: list[float] = []
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            done = sum(1 for v in client.hvals("chaos:runs")) if True else 0
            if not restarted and done >= args.jobs * 0.4:
                outage = [time.time()]
                redis_proc.restart()
                outage.append(time.time())
                restarted = True
                print(f"redis restarted at {done} completed jobs", flush=True)
            if len(kills) < args.kills and done >= len(kills) * args.jobs / (args.kills + 1):  # spread over the run
                # the hog is left to memory_hard: its failure must show that cause
                busy = [w for w in workers(sock) if w["state"] == "busy" and w.get("job_id") != ids[hog_index]]
                if busy:
                    victim = rng.choice(busy)
                    try:
                        os.kill(victim["pid"], signal.SIGKILL)
                        kills.append((time.time(), victim.get("job_id")))
                    except ProcessLookupError:
                        pass
            if _all_final(client, ids):
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        return report(client, ids, kills, hog_index, elapsed, outage, work)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        redis_proc.stop()
        log.close()
        if os.environ.get("CHAOS_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _all_final(client: Redis, ids: list[str]) -> bool:
    try:
        with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "status")
            return all(s in (b"finished", b"failed") for s in pipe.execute())
    except Exception:
        return False


def report(client, ids, kills, hog_index, elapsed, outage, work) -> int:
    jobs = Job.fetch_many(ids, connection=client)
    runs = {int(k): int(v) for k, v in client.hgetall("chaos:runs").items()}
    completed = failed = lost = 0
    failures: dict[str, int] = {}
    for job in jobs:
        status = job.get_status(refresh=False) if job else None
        if status == "finished":
            completed += 1
        elif status == "failed":
            failed += 1
            text = (job.latest_result().exc_string or "").strip().splitlines() if job.latest_result() else []
            reason = text[-1][:160] if text else "(no reason)"
            failures[reason] = failures.get(reason, 0) + 1
        else:
            lost += 1
    index_of = {job.id: int(job.args[0]) for job in jobs if job}
    # A job runs again only when the master settled it after its worker stopped mid-job
    # (killed, over memory_hard, or cut off by the Redis restart): that explains one extra run each.
    recoveries: dict[int, int] = {}
    settled_at: dict[str, list[float]] = {}
    for line in (work / "horizond.log").read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "job_recovered" and event.get("job_id") in index_of:
            i = index_of[event["job_id"]]
            recoveries[i] = recoveries.get(i, 0) + 1
            stamp = time.mktime(time.strptime(event["time"].split(",")[0], "%Y-%m-%d %H:%M:%S"))
            settled_at.setdefault(event["job_id"], []).append(stamp + int(event["time"].split(",")[1]) / 1000)
    duplicates = {i: n for i, n in runs.items() if n > 1}
    unexplained = {i: n for i, n in duplicates.items() if n - 1 > recoveries.get(i, 0)}
    latencies = []
    for kill_time, job_id in kills:
        if job_id in index_of:
            starts = [float(t) for t in client.lrange(f"chaos:starts:{index_of[job_id]}", 0, -1)]
            after = [t for t in starts if t > kill_time]
            if after:
                latencies.append(after[0] - kill_time)
    latencies.sort()
    # (a kill can land just after the job ended: nothing to settle then, so no figure).
    # Kills from just before the Redis restart until the master has seen it back (its probe runs
    # every 2 s while Redis is down, the settle on the tick after) wait for Redis by design:
    # they are reported apart.
    settle, settle_outage = [], []
    for kill_time, job_id in kills:
        if after := [t for t in settled_at.get(job_id, []) if t >= kill_time - 0.01]:
            waited = outage and outage[0] - 0.25 <= kill_time <= outage[1] + 3.0
            (settle_outage if waited else settle).append(min(after) - kill_time)
    settle.sort()
    settle_outage.sort()
    summary = {
        "jobs": len(ids), "completed": completed, "failed": failed, "lost": lost,
        "failed_reasons": failures, "duplicate_runs": len(duplicates), "unexplained_duplicates": len(unexplained),
        "unexplained": {i: [n, recoveries.get(i, 0)] for i, n in unexplained.items()},
        "recoveries": sum(recoveries.values()), "kills": len(kills), "redis_restarted": bool(outage),
        "redis_outage_s": round(outage[1] - outage[0], 2) if outage else None,
        "elapsed_s": round(elapsed, 1),
        "hog_job": client.hget(f"rq:job:{ids[-1]}", "status").decode(),
        "back_in_queue_after_kill_s": _spread(settle),
        "back_in_queue_after_kill_near_redis_restart_s": _spread(settle_outage),
        "next_start_after_kill_s": {
            "n": len(latencies),
            "median": round(latencies[len(latencies) // 2], 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None},
    }
    print(json.dumps(summary, indent=2))
    return 0 if lost == 0 and not unexplained else 1


def _spread(values: list[float]) -> dict:
    return {"n": len(values), "median": round(values[len(values) // 2], 3) if values else None,
            "max": round(values[-1], 3) if values else None}


if __name__ == "__main__":
    sys.exit(main())
