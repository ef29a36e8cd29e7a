"""The fleet: every master on one Redis and prefix is a member (a single host is a fleet of one).
This part: the leader lease with its fencing epoch, the per-node grants of fleet budgets, and
settling the jobs of a node that stopped heartbeating.
May import: core, connection, observe, control and the top-level helpers (not supervise: the
master hands in what it owns, and settles jobs through a function it passes).
"""
