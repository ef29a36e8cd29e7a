"""Reaching Redis: one client recipe (URL, TLS, Sentinel) for the master, workers and the
scheduler; the master's view of whether Redis answers; start-up checks of Redis settings
that would lose jobs.
May import: core and the top-level helpers (sysutil, signals, appload, configfile).
"""
