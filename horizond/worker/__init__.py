"""The worker side: what runs in a forked child. The child's entry point, the RQ worker
classes (lean worker, the mixin for any RQ class), the dequeue that never drops a job,
and the child's end of the state channel to the master.
May import: core, connection, observe (logging) and the top-level helpers; never the
master's shell (supervise) or control.
"""
