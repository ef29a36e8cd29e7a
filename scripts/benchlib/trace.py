"""Lists the Redis commands one job costs under horizond or rq worker-pool (MONITOR on a private Redis).

    .venv/bin/python scripts/benchlib/trace.py [horizond|rq-pool-simple] [--jobs N]

Warms the worker up with a few jobs, then records every command sent while the
next N no-op jobs run (default 3) and prints them grouped, with the count per job.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

from run import Bench, stop, wait_for


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("contender", nargs="?", default="horizond")
    p.add_argument("--jobs", type=int, default=3)
    args = p.parse_args(argv)
    bench = Bench(Path(tempfile.mkdtemp(prefix="horizond-trace-")), None, 1)
    argv = bench.contenders()[args.contender]
    import subprocess
    bench.redis.flushall()
    proc = subprocess.Popen(argv, env=bench.env, cwd=Path(__file__).parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    lines: list[str] = []
    try:
        wait_for(lambda: bench.redis.scard("rq:workers") == 1, 30, "the worker")
        from rq import Queue
        queue = Queue("default", connection=bench.redis)
        for _ in range(3):
            queue.enqueue("benchjobs.noop", result_ttl=500)
        wait_for(lambda: bench.redis.zcard("rq:finished:default") == 3, 30, "warm-up jobs")
        time.sleep(0.5)
        monitor_conn = bench.redis.monitor()
        stop_flag = threading.Event()

        def record():
            with monitor_conn as m:
                for cmd in m.listen():
                    lines.append(cmd["command"])
                    if stop_flag.is_set() and "bench-trace-end" in cmd["command"]:
                        break
        t = threading.Thread(target=record, daemon=True)
        t.start()
        time.sleep(0.3)
        lines.clear()
        queue.enqueue_many([Queue.prepare_data("benchjobs.noop", result_ttl=500) for _ in range(args.jobs)])
        wait_for(lambda: bench.redis.zcard("rq:finished:default") == 3 + args.jobs, 30, "traced jobs")
        time.sleep(0.3)
        stop_flag.set()
        bench.redis.echo("bench-trace-end")
        t.join(5)
    finally:
        stop(proc)
        bench.close()
    for line in lines:
        print(line[:160])
    counts = collections.Counter(line.split()[0].strip('"').upper() for line in lines)
    print(f"\n{sum(counts.values())} commands for {args.jobs} jobs (incl. the enqueue and these probes):")
    for name, count in counts.most_common():
        print(f"  {name:12} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
