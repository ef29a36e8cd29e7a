"""The Redis requests one job costs, by contender and path (MONITOR on the bench's private Redis).

    python scripts/benchlib/jobtrace.py [horizond|rq-pool-simple] [--path noop] [--jobs N]

One worker process is warmed up on a few jobs; then every command sent while the next N jobs
run is recorded and grouped into requests: a single command, a MULTI/EXEC block or a script
call with the commands it ran. scripts/bench puts the per-job table of these in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from redis import Redis
from run import Bench, stop, wait_for


def one_process(bench: Bench, name: str) -> list[str]:
    return {"horizond": bench.horizond_cmd(1), "horizond-stock": bench.horizond_cmd(1, worker_class="rq.worker."
            "SimpleWorker"), "rq-pool-simple": bench.rq_pool_cmd(1, ["default"])}[name]


def record(bench: Bench, name: str, path: str, jobs: int) -> list[dict]:
    """MONITOR lines (dicts as redis-py parses them) of the contender while `jobs` jobs ran."""
    bench.redis.flushall()
    proc = bench.launch(one_process(bench, name), f"trace-{name}")
    tracer = Redis.from_url(bench.url, client_name="bench-trace")  # the bench's clients: filtered out
    lines: list[dict] = []
    try:
        wait_for(lambda: bench.redis.scard("rq:workers") == 1, 30, "the worker")
        bench.enqueue(name, path, 3, flush=False)
        wait_for(lambda: bench.done(name, path, 3, tracer) >= 3, 30, "warm-up jobs")
        time.sleep(0.5)
        done = threading.Event()

        def listen():
            with bench.redis.monitor() as m:
                for cmd in m.listen():
                    if "bench-trace-end" in cmd["command"]:
                        break
                    if not done.is_set():
                        lines.append(cmd)
        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        time.sleep(0.3)
        bench.enqueue(name, path, jobs, flush=False, connection=tracer)
        wait_for(lambda: bench.done(name, path, 3 + jobs, tracer) >= 3 + jobs, 30, "traced jobs")
        time.sleep(0.3)  # the worker's next dequeue
        done.set()
        tracer.echo("bench-trace-end")
        thread.join(5)
        own = {c["addr"] for c in tracer.client_list() if c["name"] == "bench-trace"}
    finally:
        stop(proc)
    return [line for line in lines if f"{line['client_address']}:{line['client_port']}" not in own]


def requests(lines: list[dict]) -> list[list[str]]:
    """Groups MONITOR lines into requests: [kind, command names run ...]."""
    out: list[list[str]] = []
    open_multi: dict[str, list[str]] = {}
    script: list[str] = []  # the request the last script call belongs to
    for line in lines:
        name = line["command"].split()[0].strip('"').upper()
        client = f"{line['client_address']}:{line['client_port']}"
        if line["client_type"] == "lua":  # a script runs alone: its commands belong to the last script call
            script.append(name)
            continue
        if client in open_multi:
            if name == "EXEC":
                out.append(open_multi.pop(client))
                continue
            open_multi[client].append(name)
        elif name == "MULTI":
            open_multi[client] = ["MULTI/EXEC"]
        else:
            out.append([name])
        if name in ("EVALSHA", "EVAL"):
            script = open_multi.get(client) or out[-1]
    return out


def per_job(lines: list[dict], jobs: int) -> list[dict]:
    """[{request, commands, per_job}], most frequent first: what one job costs, request by request."""
    counts = collections.Counter(_signature(r) for r in requests(lines))
    return [{"request": sig, "commands": n_cmds, "per_job": count / jobs}
            for (sig, n_cmds), count in counts.most_common()]


_SHAPES = [
    (re.compile(r"horizond:[^ :]+:[0-9.a-z]+:[0-9]+:[A-Za-z0-9_.-]+"), "<worker>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<job>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<execution>"),
]
# Who reads what each command writes: why the lean worker keeps it (RQ's structures, one for one).
READERS = {
    "rq:suspended": "`rq suspend`: no job may start once it returns (issue 14, item 7)",
    "rq:execution:<job>:<execution>": "RQ's Execution: `job.get_executions()`, `rq info`, the executions' cleanup",
    "rq:executions:<job>": "the job's index of its executions (`Job.get_executions`)",
    "rq:wip:default": "StartedJobRegistry: `rq info`, the registries' cleanup, horizond's settling of lost jobs",
    "rq:worker:<worker>:executions": "the worker's executions (`Worker.current_job`, RQ's cleanup of dead workers)",
    "rq:worker:<worker>": "the worker hash: state, counts, heartbeat and TTL seen by `Worker.all()`, `rq info`",
    "rq:job:<job>": "the job hash: status, timestamps, worker, result TTL (every RQ reader)",
    "rq:job:<job>:dependents": "dependents: a job with dependents takes RQ's own success path (atomic enqueue)",
    "rq:results:<job>": "the result stream: `job.latest_result()`, `job.return_value()`",
    "rq:finished:default": "FinishedJobRegistry",
    "rq:queue:default": "the next job, taken with this job's end (one round trip less a job)",
    "rq:queue:default:intermediate": "the intermediate list: a taken job is never lost if the worker dies",
    "rq:scheduler-lock:default": "not per job: the lock renewal of horizond's one RQ scheduler",
}


def by_key(lines: list[dict], jobs: int) -> list[dict]:
    """[{command, key, per_job}] of the commands scripts ran, keys with ids replaced by their kind:
    what each job writes where, for the explanation of the success path's count."""
    counts: collections.Counter = collections.Counter()
    for line in lines:
        if line["client_type"] != "lua":
            continue
        words = line["command"].split()
        key = words[1].strip('"') if len(words) > 1 else ""
        for pattern, shape in _SHAPES:
            key = pattern.sub(shape, key)
        counts[(words[0].strip('"').upper(), key)] += 1
    return [{"command": c, "key": k, "per_job": n / jobs, "reader": READERS.get(k, "")}
            for (c, k), n in sorted(counts.items(), key=lambda item: (item[0][1], item[0][0]))]


def _signature(request: list[str]) -> tuple[str, int]:
    kind, inner = request[0], request[1:]
    if not inner:
        return kind, 1
    names = collections.Counter(inner)
    listed = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in names.most_common())
    return f"{kind}: {listed}", len(inner) + (2 if kind == "MULTI/EXEC" else 1)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("contender", nargs="?", default="horizond")
    p.add_argument("--path", default="noop")
    p.add_argument("--jobs", type=int, default=3)
    args = p.parse_args(argv)
    bench = Bench(Path(tempfile.mkdtemp(prefix="horizond-trace-")), None, 1)
    try:
        lines = record(bench, args.contender, args.path, args.jobs)
    finally:
        bench.close()
    for row in per_job(lines, args.jobs):
        print(f"{row['per_job']:5.2f} x {row['commands']:3} commands  {row['request']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
