"""Observability: queue sampling and long waits, job metrics in memory and in Redis,
the [notify] command and webhook helpers, JSON and journald logging.
May import: core, connection and the top-level helpers.
"""
