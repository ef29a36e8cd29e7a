"""The Celery app scripts/bench runs: the same job bodies, Redis as broker and result backend.

Results are kept as RQ keeps them (500 s, RQ's default result_ttl), so the per-task work
matches RQ's: run the job, store its result with a TTL. The bench counts finished tasks by
those result writes (SETEX calls in INFO commandstats), so no task sends anything extra.
"""

import os

import benchjobs
from celery import Celery

RESULT_TTL = 500

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(result_expires=RESULT_TTL, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task(name="noop")
def noop():
    return benchjobs.noop()


@app.task(name="io5")
def io5():
    return benchjobs.io5()


if __name__ == "__main__":  # python benchcelery.py FUNC N: enqueue N tasks (run by scripts/bench)
    import sys

    # A sender without the result backend: with it, Celery would subscribe to every task's result.
    sender = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
    with sender.producer_pool.acquire(block=True) as producer:
        for _ in range(int(sys.argv[2])):
            sender.send_task(sys.argv[1], producer=producer)
