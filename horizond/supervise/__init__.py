"""The supervising shell: the master loop and what it owns. Supervisors and their pools (pool.py),
worker process handles and forking, the guard (limits, settling dead workers' jobs,
recovery), reload, the balancing step's inputs, memory re-exec, systemd notify.
May import: every other part (core, connection, observe, worker, control, top-level helpers).
"""
