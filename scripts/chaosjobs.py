"""Jobs for scripts/chaos.py (workers import this through [app] paths)."""

import time

from rq import get_current_job


def work(index, seconds):
    job = get_current_job()
    job.connection.rpush(f"chaos:starts:{index}", time.time())
    time.sleep(seconds)
    job.connection.hincrby("chaos:runs", index, 1)
    return index


def hog(index, megabytes):
    """Grows past memory_hard: the master kills its worker mid-job."""
    job = get_current_job()
    job.connection.rpush(f"chaos:starts:{index}", time.time())
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(5)
    job.connection.hincrby("chaos:runs", index, 1)
