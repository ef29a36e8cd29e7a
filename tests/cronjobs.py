"""Jobs that [cron] entries enqueue in tests/test_cron.py."""

from rq import get_current_job


def tick(tag):
    job = get_current_job()
    job.connection.rpush(f"test:cron:{tag}", job.id)
