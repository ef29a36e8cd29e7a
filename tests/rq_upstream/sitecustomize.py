"""Loaded by every Python process scripts/rq-upstream starts (tests/rq_upstream is on
PYTHONPATH there), so the `rqworker` subprocesses of RQ's suite reach the test Redis
and run the worker under test too."""

import rq_upstream_env

rq_upstream_env.install()
