"""Jobs for scripts/bench: the same functions for every contender."""

import time


def noop():
    return None


def io5():
    time.sleep(0.005)  # an I/O-bound job: a 5 ms call to some service


def heavy():
    """Runs code from the heavy module, so a worker that did not preload it imports it now,
    then a full garbage collection, as a long-running worker does now and then."""
    import gc

    import benchheavy
    gc.collect()
    return benchheavy.lookup(7)
