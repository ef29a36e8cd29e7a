"""Control: how the outside reaches the daemon. The command layer (commands.py: request +
access level -> reply), the daemon interface it works against (daemon.py), the JSON it
presents (views.py), and its transports: the Unix control socket (server.py), the /metrics and
/healthz HTTP server (exporter.py); horizonctl, the client; failed-job operations the commands run.
May import: core, connection, observe and the top-level helpers; never supervise: the
commands act on the daemon through the interface they declare, which the master implements.
"""
