"""horizond: a process supervisor for RQ job queues."""

__version__ = "0.1.0"

# Job code's API (horizond/jobs.py), imported on first use: `import horizond` stays light for the CLI.
_JOB_API = {"job_options", "options", "release", "throttle", "Release", "MaxAttemptsExceeded", "RetryUntilPassed",
            "ThrottleExceeded"}


def __getattr__(name: str):
    if name in _JOB_API:
        from horizond import jobs
        return getattr(jobs, name)
    raise AttributeError(f"module 'horizond' has no attribute {name!r}")
