#!/usr/bin/env python3
"""Time every dashboard page against a large Redis: 100,000 failed jobs, 100,000 finished jobs,
500 queues (the issue's bar: every page under 300 ms).

    .venv/bin/python scripts/bench_web.py [--failed 100000] [--finished 100000] [--queues 500]
                                          [--rounds 5] [--json docs/bench_web.json]

Starts a private redis-server on a free loopback port and fills it the way RQ does: one real
job is failed and one finished by an RQ worker, and their hashes, results and registry
entries are cloned under new ids, spread evenly over the queues (the worst case for pages that
merge every queue's registry). Each queue also gets 10 pending jobs, an hour of horizond
snapshots and an hour of service-level slices (one `[slo."queue-*"]` level covers all 500: the
Service levels page, the Overview and /api/snapshot read them); 200 workers are registered.
Then `horizond web` serves it and each page is fetched over HTTP (logged in as an admin)
`rounds` times; the JSON has every timing in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from redis import Redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402

from horizond.control import webusers  # noqa: E402
from horizond.core import sketch, slo  # noqa: E402
from horizond.observe.slostore import slice_key  # noqa: E402
from horizond.observe.snapshots import snapshot_key  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def template(redis: Redis, func: str, state: str) -> tuple[dict, list]:
    """A real job in `state`, made by RQ itself: its hash and its result stream to clone."""
    q = Queue("template", connection=redis)
    job = q.enqueue(func, "card-4111", result_ttl=86400, failure_ttl=86400)
    SimpleWorker([q], connection=redis).work(burst=True)
    assert job.get_status(refresh=True) == state, job.get_status()
    fields = redis.hgetall(job.key)
    results = redis.xrange(f"rq:results:{job.id}")
    return fields, results


def fill(redis: Redis, failed: int, finished: int, queues: int) -> None:
    failed_fields, failed_results = template(redis, "testjobs.fail", "failed")
    done_fields, done_results = template(redis, "testjobs.record", "finished")
    redis.flushall()
    names = [f"queue-{i:03d}" for i in range(queues)]
    now = int(time.time())
    pipe = redis.pipeline(transaction=False)
    for kind, count, fields, results, registry in (("f", failed, failed_fields, failed_results, "failed"),
                                                   ("d", finished, done_fields, done_results, "finished")):
        for n in range(count):
            job_id = f"{kind}{n:07d}"
            queue = names[n % queues]
            pipe.hset(f"rq:job:{job_id}", mapping={**fields, b"origin": queue, b"id": job_id})
            for _, payload in results:
                pipe.xadd(f"rq:results:{job_id}", payload)
            pipe.zadd(f"rq:{registry}:{queue}", {job_id: now - count + n + 86400})
            if n % 5000 == 4999:
                pipe.execute()
    for queue in names:
        pipe.sadd("rq:queues", f"rq:queue:{queue}")
        for k in range(10):
            job_id = f"p-{queue}-{k}"
            pipe.hset(f"rq:job:{job_id}", mapping={**done_fields, b"origin": queue, b"status": "queued"})
            pipe.rpush(f"rq:queue:{queue}", job_id)
        for minute in range(60, -1, -1):
            pipe.lpush(snapshot_key("horizond", queue), json.dumps(
                {"queue": queue, "pending": 10, "processes": 1, "processed": 5000 - minute * 10, "failed": 200,
                 "jobs_per_minute": 10, "recent_runtime": 0.2, "estimated_wait": 3, "time": now - 60 * minute}))
        pipe.execute()
    for queue in names:  # what the masters' `slo` duty writes: a slice a minute, counts and a latency histogram
        for start in slo.window_starts(3600, now):
            pipe.hset(slice_key("horizond", queue, 3600, start), mapping={
                "n": 40, "f": 1, "o": 1, "x": 2, f"b{sketch.bucket_of(0.4)}": 39, f"b{sketch.bucket_of(2.5)}": 1})
        pipe.execute()
    for w in range(200):
        pipe.sadd("rq:workers", f"rq:worker:bench-{w}")
        pipe.hset(f"rq:worker:bench-{w}", mapping={"pid": 100000 + w, "hostname": "elsewhere", "state": "idle",
                                                   "birth": "2026-01-01T00:00:00.000000Z", "queues": names[w % queues]})
    pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--queues", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=str(ROOT / "docs" / "bench_web.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    port, web_port = free_port(), free_port()
    redis_proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    web = None
    try:
        redis = Redis(port=port)
        wait(lambda: _ping(redis))
        started = time.monotonic()
        fill(redis, args.failed, args.finished, args.queues)
        fill_seconds = time.monotonic() - started
        webusers.add(str(work / "users"), "bench", "admin", "bench-password")
        config = work / "horizond.toml"
        config.write_text(f'[redis]\nurl = "redis://127.0.0.1:{port}/0"\n[supervisors.a]\n'
                          f'[web]\nlisten = "127.0.0.1:{web_port}"\nusers_file = "users"\n'
                          '[slo."queue-*"]\nthroughput = 10\nmax_latency = 2\nsuccess_rate = 95\n')
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        web = subprocess.Popen([sys.executable, "-m", "horizond", "web", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{web_port}/horizon"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        wait(lambda: _up(opener, f"{base}/login"))
        token = re.search(r'name="csrf" value="([^"]+)"', opener.open(f"{base}/login").read().decode())[1]
        opener.open(f"{base}/login", urllib.parse.urlencode(
            {"csrf": token, "name": "bench", "password": "bench-password"}).encode())
        older = re.search(r'id="older" href="([^"]+)"', opener.open(f"{base}/failed").read().decode())[1]
        pages = {"overview": "/", "api_snapshot": "/api/snapshot", "service_levels": "/slo",
                 "recent_pending": "/jobs?state=pending",
                 "recent_running": "/jobs?state=running", "recent_completed": "/jobs?state=completed",
                 "recent_failed": "/jobs?state=failed", "failed": "/failed",
                 "failed_page_2": older.replace("&amp;", "&").removeprefix("/horizon"),
                 "failed_search_function": "/failed?q=testjobs.fail",
                 "failed_search_no_match": "/failed?q=no-such-text", "failed_one_queue": "/failed?queue=queue-007",
                 "job_detail": "/jobs/f0000042", "metrics_1h": "/metrics?queue=queue-007&range=1h",
                 "metrics_24h": "/metrics?queue=queue-007&range=24h", "workers": "/workers", "queues": "/queues"}
        timings = {}
        for name, path in pages.items():
            runs = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                with opener.open(base + path) as response:
                    response.read()
                    assert response.status == 200, (name, response.status)
                runs.append(round((time.perf_counter() - t0) * 1000, 1))
            timings[name] = {"path": path, "ms": runs, "median_ms": sorted(runs)[len(runs) // 2], "max_ms": max(runs)}
            print(f"{name:24} median {timings[name]['median_ms']:7.1f} ms  max {timings[name]['max_ms']:7.1f} ms")
        result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
                  "cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0], "redis_keys": redis.dbsize(),
                  "failed_jobs": args.failed, "finished_jobs": args.finished, "queues": args.queues,
                  "slo_queues": args.queues,
                  "rounds": args.rounds, "fill_seconds": round(fill_seconds, 1), "pages": timings,
                  "slowest_median_ms": max(t["median_ms"] for t in timings.values())}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"slowest page median: {result['slowest_median_ms']} ms -> {args.json}")
        return 0
    finally:
        if web:
            web.terminate()
            web.wait(10)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _ping(redis: Redis) -> bool:
    try:
        return redis.ping()
    except Exception:
        return False


def _up(opener, url: str) -> bool:
    try:
        return opener.open(url, timeout=2).status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
