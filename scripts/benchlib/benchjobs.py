"""Jobs for scripts/bench: the same functions for every contender."""

import os
import time


def noop():
    return None


def io5():
    time.sleep(0.005)  # an I/O-bound job: a 5 ms call to some service


def fail():
    raise ValueError("bench: this job always fails")


def heavy():
    """Runs code from the heavy module, so a worker that did not preload it imports it now,
    then a full garbage collection, as a long-running worker does now and then."""
    import gc

    import benchheavy
    gc.collect()
    return benchheavy.lookup(7)


REALISTIC_RETRIES = 2  # every realistic job is enqueued with Retry(max=REALISTIC_RETRIES)


def realistic(ms: int, fail_first: bool = False, note_wait: bool = True):
    """The realistic workload's job: an I/O wait of `ms`, failing its first attempt when asked.

    With note_wait, notes its queue and wait (enqueue to start, in ms) on its first attempt in a file
    of this worker process, not in Redis, so the measurement adds no Redis command."""
    from rq import get_current_job

    job = get_current_job()
    first = job.retries_left == REALISTIC_RETRIES
    if first and note_wait:
        waited = time.time() - job.enqueued_at.timestamp()
        with open(os.path.join(os.environ["BENCH_WAITS_DIR"], f"{os.getpid()}.txt"), "a") as out:
            out.write(f"{job.origin} {waited * 1000:.2f}\n")
    time.sleep(ms / 1000)
    if fail_first and first:
        raise ConnectionError("bench: first attempt fails, the retry succeeds")
    return ms
