"""Jobs for tests/test_limits.py: each notes when it ran, so overlaps and rates can be measured."""

import time

from rq import get_current_job


def timed(seconds, tag):
    job = get_current_job()
    started = time.time()
    time.sleep(seconds)
    job.connection.rpush(f"test:spans:{tag}", f"{started}:{time.time()}:{job.id}")
