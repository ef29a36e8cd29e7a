"""The job scripts/bench_slo.py real enqueues: it takes as long as the recorded job did."""

import time


def sleep(seconds: float) -> None:
    time.sleep(seconds)
