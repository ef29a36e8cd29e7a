"""Jobs that attack the process that runs them (tests/test_adversarial_process.py)."""

import os

from rq import get_current_job


def write_to_channel(data: bytes, tag: str):
    """Write raw bytes to this worker's state channel to the master, as any job could."""
    from horizond.worker import dequeue

    get_current_job().connection.hset("test:started", tag, os.getpid())
    os.write(dequeue.GATE.fd, data)
    import time

    time.sleep(30)  # the master should kill this worker long before
