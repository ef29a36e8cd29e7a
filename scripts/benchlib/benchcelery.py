"""The Celery app scripts/bench runs: the same job bodies, Redis as broker, no result backend.

Each task also INCRs a done-counter so the bench sees when the last task finished
(Celery prefetches, so an empty broker list does not mean drained); the bench
subtracts those INCRs from Celery's Redis command count.
"""

import os

import benchjobs
import redis
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
_done = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@app.task(name="noop")
def noop():
    benchjobs.noop()
    _done.incr("bench:celery:done")


@app.task(name="io5")
def io5():
    benchjobs.io5()
    _done.incr("bench:celery:done")


if __name__ == "__main__":  # python benchcelery.py FUNC N: enqueue N tasks (run by scripts/bench)
    import sys

    task = {"noop": noop, "io5": io5}[sys.argv[1]]
    with app.producer_pool.acquire(block=True) as producer:
        for _ in range(int(sys.argv[2])):
            task.apply_async(producer=producer)
