"""horizond: a process supervisor for RQ job queues."""

__version__ = "0.1.0"
