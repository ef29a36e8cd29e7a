"""Jobs that press on the master's guards (imported by workers through [app] paths)."""

import os
import time

from rq import get_current_job

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def rss_mb() -> float:
    """This process's resident memory, as the master's psutil reading sees it."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MB


def allocate_fast(limit_mb, tag, head_mb=0, step_mb=10, pause=0.02, ceiling_mb=1500, hold=30):
    """Take head_mb at once, then step_mb every `pause` s (about 300-500 MB/s) up to ceiling_mb; hold it.

    After every step it writes to test:alloc:<tag> how far it got: `crossed` (wall time when its
    RSS first passed limit_mb), `last` (the latest step) and `peak_mb`. A kill stops the writes,
    so `last` - `crossed` is how long it ran over the limit.
    """
    redis = get_current_job().connection
    key = f"test:alloc:{tag}"
    hoard, crossed = [b"\1" * (head_mb * MB)], False
    while head_mb + (len(hoard) - 1) * step_mb < ceiling_mb:
        hoard.append(b"\1" * (step_mb * MB))  # bytes(n) could map untouched zero pages: not resident
        now, rss = time.time(), rss_mb()
        fields = {"last": now, "peak_mb": rss}
        if rss > limit_mb and not crossed:
            fields["crossed"], crossed = now, True
        redis.hset(key, mapping=fields)
        time.sleep(pause)
    time.sleep(hold)
    redis.hincrby("test:runs", tag, 1)
