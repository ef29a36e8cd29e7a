"""Control: how the outside reaches the daemon. The command layer (request + access level
-> reply) and its transports: the Unix control socket, the /metrics and /healthz HTTP
server; horizonctl, the client; failed-job operations the commands run.
May import: core, connection, observe and the top-level helpers; never supervise: the
commands act on the daemon through the interface they declare, which the master implements.
"""
