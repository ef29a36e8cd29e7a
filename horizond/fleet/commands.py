"""The operator's side of the fleet: send a command, collect confirmations, list and merge nodes.

Called by the command layer (through the daemon's `fleet`) in the master's loop, so each is a
few short Redis round trips and never waits for another node: confirmations are written by the
nodes as they act, and horizonctl polls for them (`confirmations`) until each node answered or
3 s passed.
"""

from __future__ import annotations

import json
import time

from redis import Redis

from horizond.control.commands import CommandError
from horizond.core import fleetview
from horizond.fleet.keys import COMMANDS_KEPT, FleetKeys


def live_entries(redis: Redis, keys: FleetKeys) -> list[dict]:
    """The entries of the nodes alive now: listed in the nodes set and whose key has not expired."""
    names = [n.decode(errors="replace") for n in redis.zrange(keys.nodes, 0, -1)]
    if not names:
        return []
    entries = []
    for name, raw in zip(names, redis.mget([keys.node(n) for n in names]), strict=True):
        try:
            entry = fleetview.parse_entry(json.loads(raw)) if raw is not None else None
        except ValueError:
            entry = None
        if entry is not None and entry["node"] == name:
            entries.append(entry)
    return entries


def node_rows(entries: list[dict]) -> list[dict]:
    """`horizonctl nodes`: one row per live node."""
    return [{"node": e["node"], "host": e["host"], "pid": e["pid"], "state": e["state"],
             "last_seen": e["last_seen"], "version": e.get("version"), "started": e.get("started"),
             "heartbeat": e.get("heartbeat"), "supervisors": len(e["supervisors"]),
             "processes": sum(s["processes"] for s in e["supervisors"])}
            for e in sorted(entries, key=lambda e: e["node"])]


def view(redis: Redis, keys: FleetKeys, own: dict) -> dict:
    """`status --fleet`: the merged view; this node's own entry stands in until it is written."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.desired)
        desired = decode(pipe.execute()[0])
    entries = live_entries(redis, keys)
    if not any(e["node"] == own["node"] for e in entries):
        entries.append(own)
    return fleetview.merge(entries, desired)


def send(redis: Redis, keys: FleetKeys, sender: str, local: set[str], action: str, supervisor: str | None,
         processes: int | None) -> dict:
    """Store the desired state a command implies and add the command for every node to act on;
    returns its id and the nodes alive now, whose confirmations horizonctl then waits for."""
    entries = live_entries(redis, keys)
    known = local | {s["name"] for e in entries for s in e["supervisors"]}
    if supervisor is not None and supervisor not in known:
        raise CommandError(f"unknown supervisor {supervisor!r} on every live node (known: {', '.join(sorted(known))})")
    desired = decode(redis.hgetall(keys.desired))
    new = fleetview.change(desired, action, supervisor, processes)
    args = {"supervisor": supervisor, **({"processes": processes} if action == "scale" else {})}
    with redis.pipeline(transaction=True) as pipe:
        gone = [k for k in desired if k not in new]
        if gone:
            pipe.hdel(keys.desired, *gone)
        changed = {k: v for k, v in new.items() if desired.get(k) != v}
        if changed:
            pipe.hset(keys.desired, mapping=changed)
        pipe.xadd(keys.commands, {"cmd": action, "args": json.dumps(args), "from": sender, "at": repr(time.time())},
                  maxlen=COMMANDS_KEPT, approximate=True)
        pipe.publish(keys.wake, "1")
        command_id = pipe.execute()[-2].decode()
    return {"id": command_id, "nodes": sorted({e["node"] for e in entries} | {sender}), "desired": new}


def confirmations(redis: Redis, keys: FleetKeys, command_id: str) -> dict:
    """node -> its reply ({"ok", "result" or "error"}) for each node that has acted on the command."""
    if not isinstance(command_id, str) or not command_id.replace("-", "").isdigit():
        raise CommandError(f"expected a fleet command id like '1700000000000-0', got {command_id!r}")
    replies = {}
    for node, raw in redis.hgetall(keys.ack(command_id)).items():
        try:
            replies[node.decode(errors="replace")] = json.loads(raw)
        except ValueError:
            continue
    return replies


def decode(raw: dict) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
