"""The fleet as data: a node's membership entry, the stored desired state, the merged view.

Pure: the shell (horizond/fleet/) reads and writes Redis; here are the decisions, so the
rules are tested exhaustively. Anything read back from Redis is untrusted (any client that can
write the prefix's keys can write junk): `parse_entry` keeps only well-formed entries.

Desired state (the `fleet:desired` hash) holds persistent wishes, adopted by every node on
every heartbeat: `pause:*` (every supervisor), `pause:NAME`, `run:NAME` (exempt from
`pause:*`: `continue --fleet NAME` after `pause --fleet`), `scale:NAME` (a fleet-wide total).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

ACTIONS = ("pause", "continue", "restart", "terminate", "scale")
PERSISTENT = ("pause", "continue", "scale")  # stored as desired state; restart and terminate are one-off
MAX_FLEET_PROCESSES = 1_000_000  # `scale --fleet` total: up to 1000 nodes at max_processes' cap
NAME = re.compile(r"[^\s:]{1,200}")  # a supervisor name as a hash field's tail (no ':', no space)

ENTRY_SUPERVISOR_KEYS = ("name", "state", "processes", "target", "pinned", "balance", "memory_ok", "busy",
                         "retiring", "queues", "backoff")


# --- desired state ----------------------------------------------------------------------------

def paused(desired: Mapping[str, str], name: str) -> bool:
    """Whether the fleet wants supervisor `name` paused."""
    if desired.get(f"pause:{name}"):
        return True
    return bool(desired.get("pause:*")) and not desired.get(f"run:{name}")


def budget(desired: Mapping[str, str], name: str) -> int | None:
    """The fleet-wide total `scale --fleet NAME N` stored, None for auto (or junk)."""
    raw = desired.get(f"scale:{name}")
    return int(raw) if raw is not None and raw.isdigit() and int(raw) <= MAX_FLEET_PROCESSES else None


def change(desired: Mapping[str, str], action: str, supervisor: str | None,
           processes: int | None = None) -> dict[str, str]:
    """The desired state after a fleet command (restart/terminate leave it as it is).

    pause (all) clears every per-supervisor pause and exemption; continue (all) clears every
    pause; continue NAME under `pause:*` exempts NAME; scale NAME auto drops the total."""
    new = dict(desired)
    if action == "pause" and supervisor is None:
        new = {k: v for k, v in new.items() if not k.startswith(("pause:", "run:"))}
        new["pause:*"] = "1"
    elif action == "pause":
        new.pop(f"run:{supervisor}", None)
        new[f"pause:{supervisor}"] = "1"
    elif action == "continue" and supervisor is None:
        new = {k: v for k, v in new.items() if not k.startswith(("pause:", "run:"))}
    elif action == "continue":
        new.pop(f"pause:{supervisor}", None)
        if new.get("pause:*"):
            new[f"run:{supervisor}"] = "1"
    elif action == "scale":
        if processes is None:
            new.pop(f"scale:{supervisor}", None)
        else:
            new[f"scale:{supervisor}"] = str(processes)
    return new


def held(desired: Mapping[str, str], names: Iterable[str]) -> frozenset[str]:
    """Of these supervisors, those the fleet holds paused."""
    return frozenset(n for n in names if paused(desired, n))


# --- a node's entry ------------------------------------------------------------------------------

def entry(status: Mapping[str, Any], *, node: str, host: str, heartbeat: float, now: float,
          fleet_max: Mapping[str, int | None], extra: Mapping[str, Any] | None = None) -> dict:
    """This node's membership entry from its own `status` (the command's result).

    Supervisors as `status --json` shows them, without the per-worker rows (their names are
    in `workers`, for whoever settles a dead node's jobs), plus `paused` and the configured
    `fleet_max_processes` when set. `extra` (demand, floors ...) is merged in at the top."""
    sups = []
    workers: list[str] = []
    for sup in status["supervisors"]:
        if sup.get("state") == "removed":
            continue
        row = {k: sup[k] for k in ENTRY_SUPERVISOR_KEYS if k in sup}
        row["paused"] = sup.get("state") == "paused"
        if fleet_max.get(sup["name"]) is not None:
            row["fleet_max_processes"] = fleet_max[sup["name"]]
        sups.append(row)
        workers += [w["name"] for w in sup.get("workers", ()) if w.get("name")]
    return {**(extra or {}), "node": node, "host": host, "pid": status["pid"], "version": status["version"],
            "started": round(now - status["uptime"], 3), "state": status["state"], "last_seen": round(now, 3),
            "heartbeat": heartbeat, "supervisors": sups, "workers": workers}


def parse_entry(data: Any) -> dict | None:
    """A decoded entry if it has the shape a master writes, else None (junk is ignored, not shown)."""
    if not isinstance(data, dict):
        return None
    checks = {"node": str, "host": str, "pid": int, "state": str, "last_seen": (int, float), "supervisors": list}
    if any(not isinstance(data.get(k), t) or isinstance(data.get(k), bool) for k, t in checks.items()):
        return None
    for sup in data["supervisors"]:
        if not (isinstance(sup, dict) and isinstance(sup.get("name"), str) and _count(sup.get("processes"))
                and isinstance(sup.get("queues", {}), dict)):
            return None
    return data


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def instance(entry_: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """Which master wrote an entry: host, pid and start time (a restart is another instance)."""
    return entry_.get("host"), entry_.get("pid"), entry_.get("started")


# --- the merged view -----------------------------------------------------------------------------

def merge(entries: Iterable[Mapping[str, Any]], desired: Mapping[str, str]) -> dict:
    """`status --fleet`: every live node, each supervisor's processes summed over the nodes with
    its budget (the smaller of `fleet_max_processes` and a `scale --fleet` total; None: none),
    each queue's processes summed and its size as the most recently seen node sampled it."""
    nodes = sorted(entries, key=lambda e: e["node"])
    sups: dict[str, dict] = {}
    queues: dict[str, dict] = {}
    seen_at: dict[str, float] = {}
    for e in nodes:
        for sup in e["supervisors"]:
            row = sups.setdefault(sup["name"], {"name": sup["name"], "processes": 0, "budget": None, "nodes": {}})
            row["processes"] += sup["processes"]
            row["nodes"][e["node"]] = row["nodes"].get(e["node"], 0) + sup["processes"]
            limit = sup.get("fleet_max_processes")
            if _count(limit):
                row["budget"] = limit if row["budget"] is None else min(row["budget"], limit)
            for q, info in sup.get("queues", {}).items():
                if not isinstance(info, dict):
                    continue
                slot = queues.setdefault(q, {"size": None, "processes": 0})
                if _count(info.get("processes")):
                    slot["processes"] += info["processes"]
                if _count(info.get("size")) and e["last_seen"] >= seen_at.get(q, float("-inf")):
                    slot["size"], seen_at[q] = info["size"], e["last_seen"]
    for name, row in sups.items():
        total = budget(desired, name)
        if total is not None:
            row["budget"] = total if row["budget"] is None else min(row["budget"], total)
    node_rows = [{"node": e["node"], "host": e["host"], "pid": e["pid"], "state": e["state"],
                  "last_seen": e["last_seen"], "supervisors": e["supervisors"]} for e in nodes]
    return {"nodes": node_rows, "supervisors": sorted(sups.values(), key=lambda r: r["name"]),
            "queues": dict(sorted(queues.items()))}
