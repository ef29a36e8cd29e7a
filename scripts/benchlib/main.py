"""scripts/bench entry point: argument parsing, the alternating schedule, the report."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import psutil
from probes import soak, spawn_times, worker_memory
from run import Bench, find_celery


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000, help="no-op jobs per run (default 10000)")
    p.add_argument("--io-jobs", type=int, default=2_000, help="5 ms jobs per run (default 2000)")
    p.add_argument("--fork-jobs", type=int, default=1_000,
                   help="jobs per run for rq worker-pool's fork-per-job default worker (default 1000: ~90 jobs/s)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    p.add_argument("--procs", type=int, default=2, help="worker processes per contender (default 2)")
    p.add_argument("--only", default="",
                   help="comma-separated contenders (horizond,horizond-stock,rq-pool-simple,rq-pool-fork,celery)")
    p.add_argument("--workloads", default="noop,io5", help="comma-separated: noop, io5")
    p.add_argument("--celery", help="path of the celery command (default: .venv-celery/bin/celery, then PATH)")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of master CPU/RSS sampling after a drain")
    p.add_argument("--no-probes", action="store_true", help="skip the spawn and memory probes")
    p.add_argument("--soak", type=float, default=0.0, help="also soak an idle horizond this many seconds")
    p.add_argument("--json", help="also write all rows to this file")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="horizond-bench-"))
    bench = Bench(work, find_celery(args.celery), args.procs)
    contenders = bench.contenders()
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only.split(",")}
    print(f"# {platform.node()}: {psutil.cpu_count()} cores, Python {platform.python_version()}, "
          f"{_redis_version(bench)}, celery: {bench.celery or 'not installed'}", flush=True)
    rows: list[dict] = []
    report: dict = {"rows": rows}
    try:
        for rnd in range(args.rounds):
            order = list(contenders) if rnd % 2 == 0 else list(reversed(contenders))
            for func in args.workloads.split(","):
                for name in order:
                    n = args.jobs if func == "noop" else args.io_jobs
                    if name == "rq-pool-fork":
                        n = min(n, args.fork_jobs)
                    row = bench.run(name, contenders[name], func, n, args.idle if func == "noop" else 0)
                    row["round"] = rnd + 1
                    rows.append(row)
                    print(_row_line(row), flush=True)
        print_summary(rows)
        if not args.no_probes:
            report["spawn"] = spawn_times(bench)
            print("\nspawn (s):", json.dumps({k: round(v, 3) for k, v in report["spawn"].items()}), flush=True)
            report["memory"] = worker_memory(bench)
            for tag, m in report["memory"].items():
                print(f"memory {tag:10}: " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()), flush=True)
        if args.soak:
            report["soak"] = soak(bench, args.soak)
            print("soak:", json.dumps({k: round(v, 3) for k, v in report["soak"].items()}), flush=True)
    finally:
        bench.close()
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _redis_version(bench: Bench) -> str:
    return "Redis " + bench.redis.info("server")["redis_version"]


def _row_line(row: dict) -> str:
    extra = ""
    if "master_cpu_pct" in row:
        extra = f"  idle master {row['master_cpu_pct']:.2f}% CPU, {row['master_rss_mb']:.1f} MB RSS"
    return (f"round {row['round']} {row['func']:5} {row['name']:15} {row['jobs']:6} jobs {row['seconds']:7.2f} s "
            f"{row['jobs_per_s']:8.1f} jobs/s {row['commands_per_job']:6.1f} cmds/job{extra}")


def print_summary(rows: list[dict]) -> None:
    print("\n| workload | contender | jobs/s (median) | vs rq-pool-simple | Redis cmds/job |")
    print("|---|---|---:|---:|---:|")
    for func in dict.fromkeys(r["func"] for r in rows):
        by_name: dict[str, list[dict]] = {}
        for r in rows:
            if r["func"] == func:
                by_name.setdefault(r["name"], []).append(r)
        base = statistics.median(r["jobs_per_s"] for r in by_name.get("rq-pool-simple", [])) \
            if "rq-pool-simple" in by_name else None
        for name, rs in by_name.items():
            rate = statistics.median(r["jobs_per_s"] for r in rs)
            ratio = f"{rate / base:.2f}x" if base else "-"
            cmds = statistics.median(r["commands_per_job"] for r in rs)
            print(f"| {func} | {name} | {rate:.0f} | {ratio} | {cmds:.1f} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
