"""The fleet's Redis keys, all under `[redis] prefix` (see docs/architecture.md for who owns which)."""

from __future__ import annotations


class FleetKeys:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.nodes = f"{prefix}:fleet:nodes"  # ZSET node -> last seen (epoch)
        self.desired = f"{prefix}:fleet:desired"  # HASH of persistent desired state (core/fleetview.py)
        self.commands = f"{prefix}:fleet:commands"  # STREAM of fleet commands, trimmed to ~COMMANDS_KEPT
        self.wake = f"{prefix}:fleet:wake"  # pub/sub channel: a command was added, read it now

    def node(self, node: str) -> str:
        return f"{self.prefix}:fleet:node:{node}"  # the membership entry, JSON, PX = 3 heartbeats

    def ack(self, command_id: str) -> str:
        return f"{self.prefix}:fleet:ack:{command_id}"  # HASH node -> the node's reply, for ACK_TTL s


COMMANDS_KEPT = 1000
ACK_TTL = 60
BEATS_TO_EXPIRY = 3
