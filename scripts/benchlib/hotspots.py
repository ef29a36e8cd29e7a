"""cProfile of one burst worker draining no-op jobs: where a job's time goes.

    .venv/bin/python scripts/benchlib/hotspots.py [--jobs 3000] [--top 15]

Profiles RQ's SimpleWorker and horizond's LeanWorker on the same jobs (a private
redis-server, in this process) and prints, for each, jobs/s under the profiler,
the share of time spent waiting on Redis sockets, and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

from rq import Queue, SimpleWorker
from run import ROOT, Bench

sys.path.insert(0, str(ROOT))
from horizond.worker.leanworker import LeanWorker  # noqa: E402


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    bench = Bench(Path(tempfile.mkdtemp(prefix="horizond-profile-")), None, 1)
    try:
        for cls in (SimpleWorker, LeanWorker):
            bench.enqueue("profile", "noop", args.jobs)
            worker = cls([Queue("default", connection=bench.redis)], connection=bench.redis)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.runcall(worker.work, burst=True, logging_level="WARNING")
            elapsed = time.perf_counter() - started
            stats = pstats.Stats(profiler)
            total = stats.total_tt
            waiting = sum(tt for key, (_, _, tt, _, _) in stats.stats.items() if "recv" in key[2]
                          or "sendall" in key[2])
            print(f"\n== {cls.__name__}: {args.jobs / elapsed:.0f} jobs/s under cProfile; "
                  f"{100 * waiting / total:.0f}% of the time in socket recv/send (Redis round trips)")
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.top)
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
