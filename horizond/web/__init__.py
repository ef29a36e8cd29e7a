"""The dashboard: a separate process (never the master) that reads RQ's registries and
horizond's own keys from Redis, and acts through the command layer (actions.py: every change
is `CommandLayer.handle(request, access)` over daemon.py's Redis-only daemon).

May import core, base, connection, observe, control, fleet (to send fleet commands), web. Never supervise: the web
process is not the master, and the master only starts it as a child (`horizond web`).
"""
