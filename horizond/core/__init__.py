"""The pure core: the decisions, with no I/O.

Owns config parsing and validation (TOML text -> frozen dataclasses), the balancer
(queue stats + current counts + options -> targets), health grading, job policy and
crash-loop back-off. Everything here is a function of its arguments, so it is tested
exhaustively (and with hypothesis) without processes or Redis.
May import: nothing from horizond outside core; no I/O modules (tests/test_architecture.py).
"""
