"""scripts/bench entry point: arguments, the alternating schedule, the run's JSON and markdown."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jobtrace
import masterprof
import psutil
import realistic
import redis
import report
import rq
from probes import soak, spawn_times, worker_memory
from run import CELERY_PATHS, HERE, PY, ROOT, Bench, find_celery, stop, wait_for

DEFAULT_ONLY = "horizond,rq-pool-simple,celery"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs per run and path (default 10000)")
    p.add_argument("--io-jobs", type=int, default=2_000, help="5 ms jobs per run, path io5 (default 2000)")
    p.add_argument("--fork-jobs", type=int, default=1_000, help="jobs per run for rq-pool-fork (default 1000)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument("--procs", type=int, default=2, help="worker processes per contender (default 2)")
    p.add_argument("--only", default=DEFAULT_ONLY,
                   help=f"contenders (default {DEFAULT_ONLY}; also horizond-stock, rq-pool-fork)")
    p.add_argument("--paths", default="noop,ttl0,fail,retry",
                   help="job paths: noop (success), ttl0 (result_ttl=0), fail, retry, io5 (Celery: noop, io5 only)")
    p.add_argument("--celery", help="path of the celery command (default: .venv-celery/bin/celery, then PATH)")
    p.add_argument("--no-celery", action="store_true", help="leave Celery out")
    p.add_argument("--real-scale", type=float, default=0.2,
                   help="realistic workload: share of etc/horizond.toml's max_processes (default 0.2); 0 skips it")
    p.add_argument("--real-rate", type=float, default=80.0, help="realistic: paced arrivals, jobs/s (default 80)")
    p.add_argument("--real-seconds", type=float, default=30.0, help="realistic: paced phase, s (default 30)")
    p.add_argument("--real-backlog", type=int, default=3000, help="realistic: backlog phase, jobs (default 3000)")
    p.add_argument("--profile-jobs", type=int, default=10_000,
                   help="no-op jobs drained with the master under cProfile (default 10000; 0 skips)")
    p.add_argument("--no-probes", action="store_true", help="skip the spawn and memory probes")
    p.add_argument("--no-trace", action="store_true", help="skip the MONITOR listing of each path's requests")
    p.add_argument("--soak", type=float, default=0.0, help="also soak an idle horizond this many seconds")
    p.add_argument("--json", help="also write the run's JSON to this file")
    p.add_argument("--markdown", action="store_true",
                   help="write docs/benchmarks.md and docs/benchmarks.json from this run")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="horizond-bench-"))
    bench = Bench(work, None if args.no_celery else find_celery(args.celery), args.procs)
    contenders = {k: v for k, v in bench.contenders().items() if k in args.only.split(",")}
    data: dict = {"meta": meta(bench, argv, args), "paths": []}
    print(json.dumps(data["meta"]["machine"]), flush=True)
    started = time.perf_counter()
    try:
        run_paths(bench, args, contenders, data["paths"])
        if not args.no_trace:
            data["trace"] = trace_paths(bench, args)
        if args.real_scale:
            data["realistic"] = run_realistic(bench, args)
        if args.profile_jobs:
            data["master_profile"] = profile_master(bench, args.profile_jobs)
            print(data["master_profile"]["summary"], flush=True)
        if not args.no_probes:
            data["spawn"] = spawn_times(bench)
            print("spawn (s):", json.dumps({k: round(v, 3) for k, v in data["spawn"].items()}), flush=True)
            data["memory"] = worker_memory(bench)
            print("memory:", json.dumps(data["memory"]), flush=True)
        if args.soak:
            data["soak"] = soak(bench, args.soak)
            print("soak:", json.dumps(data["soak"]), flush=True)
    finally:
        bench.close()
    data["meta"]["duration_s"] = time.perf_counter() - started
    data["meta"]["load_average_end"] = os.getloadavg()
    text = json.dumps(data, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print("\n" + report.targets_table(data), flush=True)
    if args.markdown:
        report.write(data, ROOT)
        print("wrote docs/benchmarks.md, docs/benchmarks.json and README.md's headline figures", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_paths(bench: Bench, args, contenders: dict[str, list[str]], rows: list[dict]) -> None:
    for rnd in range(args.rounds):
        order = list(contenders) if rnd % 2 == 0 else list(reversed(contenders))
        for path in args.paths.split(","):
            for name in order:
                if name == "celery" and path not in CELERY_PATHS:
                    continue
                n = args.io_jobs if path == "io5" else args.jobs
                if name == "rq-pool-fork":
                    n = min(n, args.fork_jobs)
                row = bench.run(name, contenders[name], path, n)
                row["round"] = rnd + 1
                rows.append(row)
                print(f"round {rnd + 1} {path:5} {name:15} {n:6} jobs {row['jobs_per_s']:8.1f} jobs/s "
                      f"{row['commands_per_job']:6.1f} cmds/job {row['round_trips_per_job']:5.2f} trips/job"
                      + (f"  master {row['master_drain_cpu_pct']:.1f}% CPU" if "master_drain_cpu_pct" in row
                         and name.startswith("horizond") else ""), flush=True)


def trace_paths(bench: Bench, args, jobs: int = 5) -> dict:
    """Per path and contender, the requests one job costs (MONITOR), for the document's explanation."""
    out = {}
    for path in args.paths.split(","):
        for name in ("horizond", "rq-pool-simple"):
            lines = jobtrace.record(bench, name, path, jobs)
            out[f"{name} {path}"] = {"jobs": jobs, "requests": jobtrace.per_job(lines, jobs)}
            if name == "horizond" and path == "noop":
                out[f"{name} {path}"]["keys"] = jobtrace.by_key(lines, jobs)
    return out


def run_realistic(bench: Bench, args) -> dict:
    sups = realistic.supervisors(args.real_scale)
    workers = sum(s["processes"] for s in sups.values())
    argvs = {"horizond": [realistic.horizond_argv(bench, sups)], "rq-pool-simple": realistic.rq_pool_argvs(bench, sups)}
    rows = []
    for rnd in range(args.rounds):
        for name in (argvs if rnd % 2 == 0 else reversed(list(argvs))):
            row = realistic.run(bench, name, argvs[name], workers, args.real_rate, args.real_seconds,
                                args.real_backlog)
            row["round"] = rnd + 1
            rows.append(row)
            print("realistic:", json.dumps(row), flush=True)
    from horizond.worker.dequeue import MULTI_QUEUE_BLOCK, MULTI_QUEUE_FIRST_BLOCK
    return {"scale": args.real_scale, "supervisors": sups, "rows": rows, "multi_queue_block_s": MULTI_QUEUE_BLOCK,
            "multi_queue_first_block_s": MULTI_QUEUE_FIRST_BLOCK}


def profile_master(bench: Bench, n: int) -> dict:
    """Drains n no-op jobs with horizond's master under cProfile; its own-time and cumulative tops."""
    out = bench.work / "master.prof"
    argv = bench.horizond_cmd(bench.procs)
    argv = [PY, str(HERE / "masterprof.py"), str(out), *argv[3:]]  # replaces `PY -m horizond`
    bench.enqueue("horizond", "noop", n)
    proc = bench.launch(argv, "master-profile")
    started = time.perf_counter()
    try:
        wait_for(lambda: bench.done("horizond", "noop", n) >= n, max(120.0, n / 20), "the profiled drain")
        seconds = time.perf_counter() - started
    finally:
        stop(proc)
    return {"jobs": n, "seconds": seconds, "ticks": masterprof.calls(str(out), "run_due", "duties.py"),
            "summary": masterprof.summary(str(out))}


def meta(bench: Bench, argv: list[str], args) -> dict:
    celery = None
    if bench.celery:
        celery = subprocess.run([bench.celery, "--version"], capture_output=True, text=True).stdout.split()[0]
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.machine())
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": (f"PYTHON={shlex.quote(os.environ['PYTHON'])} " if os.environ.get("PYTHON") else "")
        + shlex.join(["scripts/bench", *argv]),
        "args": vars(args),
        "defaults": {k: v for k, v in vars(parse([])).items()},
        "load_average_start": os.getloadavg(),
        "machine": {"cores": psutil.cpu_count(), "cpu": cpu_model, "arch": platform.machine(),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "redis": bench.redis.info("server")["redis_version"],
                    "rq": rq.__version__, "redis_py": redis.__version__, "celery": celery},
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
