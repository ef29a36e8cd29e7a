#!/usr/bin/env python3
"""A simulated fleet: the planner's cost, and the Redis commands a beat costs.

    scripts/fleet_sim.py [--nodes 100] [--supervisors 50] [--rounds 20] [--redis-url URL] [--json OUT]

1. Planner: times the leader's planning (fleet/leader.py FleetLeader.plan, which runs
   core/fleetplan.plan per budgeted supervisor) over a fleet of NODES x SUPERVISORS, every
   supervisor budgeted, demands drawn at random each round (seeded: the same run every time).
2. Redis (with --redis-url, a scratch Redis: it is FLUSHed): runs the real member beat and leader
   step of 3 simulated nodes (no workers) for 20 beats and reads INFO commandstats: the commands
   per node per beat, the follower's and the leader's.

Writes the raw figures as JSON (docs/fleet_sim.json); docs/fleet.md's figures are generated from
it by `--markdown` (between the fleet-sim markers), never typed by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from horizond.core.config import SupervisorConfig  # noqa: E402
from horizond.fleet.budget import FleetMember, Identity  # noqa: E402
from horizond.fleet.leader import FleetLeader  # noqa: E402


def entries(rng: random.Random, nodes: int, sups: int) -> dict[str, dict]:
    out = {}
    for n in range(nodes):
        rows = {}
        for s in range(sups):
            cap = rng.randint(2, 20)
            rows[f"s{s}"] = [rng.randint(0, cap), rng.randint(0, 2), cap, rng.randint(0, cap), nodes * 4]
        out[f"node{n:03d}"] = {"node": f"node{n:03d}", "pid": n, "sups": rows, "grant": None}
    return out


def time_planner(nodes: int, sups: int, rounds: int) -> dict:
    rng = random.Random(16)
    member = FleetMember(Identity("node000", "sim", 1, None), "sim", 2.0, epoch_seen=1, leading=True)
    leader = FleetLeader(settle_node=lambda *a: [])
    times = []
    for _ in range(rounds):
        fleet = entries(rng, nodes, sups)
        started = time.perf_counter()
        grants = leader.plan(fleet, member, time.monotonic())
        times.append(time.perf_counter() - started)
        assert len(grants) == nodes
    size = sum(len(g) for g in grants.values())
    return {"nodes": nodes, "supervisors": sups, "rounds": rounds,
            "median_ms": round(statistics.median(times) * 1e3, 2), "max_ms": round(max(times) * 1e3, 2),
            "grant_bytes_total": size, "grant_bytes_per_node": size // nodes}


def _sup(name: str, budget: int | None) -> SimpleNamespace:
    pools = {"q": SimpleNamespace(target=2)}
    return SimpleNamespace(name=name, config=SupervisorConfig(name=name, fleet_max_processes=budget), pools=pools,
                           fleet_wanted=2, memory_ok=True, processes=lambda: [1, 2], fleet_budgeted=False,
                           fleet_grant=None)


def count_redis(url: str, beats: int = 20, heartbeat: float = 2.0) -> dict:
    from redis import Redis

    client = Redis.from_url(url)
    client.flushall()
    names = ["a", "b", "c"]
    members = {n: FleetMember(Identity(n, "sim", i + 1, None), "sim", heartbeat) for i, n in enumerate(names)}
    sups = {n: [_sup("budgeted", 6), _sup("free", None)] for n in names}
    leaders = {n: FleetLeader(settle_node=lambda *a: []) for n in names}

    def stats() -> dict[str, int]:
        raw = client.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in raw.items()}

    def run(only: list[str]) -> dict[str, int]:
        before = stats()
        for _ in range(beats):
            for n in only:
                members[n].beat(client, sups[n], [], time.monotonic())
                leaders[n].step(client, members[n], time.monotonic())
        after = stats()
        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        calls["info"] = 0
        return {k: v for k, v in calls.items() if v > 0}

    for n in names:  # everyone joins; "a" takes the lease
        members[n].beat(client, sups[n], [], time.monotonic())
    leader = next(n for n in names if members[n].leading)
    follower = next(n for n in names if n != leader)
    per = {"follower": run([follower]), "leader": run([leader])}
    out = {"beats": beats, "nodes_in_roster": len(names)}
    for role, calls in per.items():
        out[role] = {"commands_per_beat": round(sum(calls.values()) / beats, 2),
                     "by_command_per_beat": {k: round(v / beats, 2) for k, v in sorted(calls.items())},
                     "round_trips_per_beat": 1 if role == "follower" else 3}
    return out


def markdown(data: dict) -> str:
    p, r = data["planner"], data.get("redis")
    lines = [f"Measured {data['measured']} on {data['machine']} (Python {data['python']}), "
             f"`scripts/fleet_sim.py`; raw data in docs/fleet_sim.json.", "",
             f"- Planner, {p['nodes']} nodes x {p['supervisors']} budgeted supervisors: median "
             f"**{p['median_ms']} ms** per leader beat (max {p['max_ms']} ms over {p['rounds']} rounds); the grants "
             f"it writes total {p['grant_bytes_total']} bytes ({p['grant_bytes_per_node']} per node)."]
    if r:
        for role in ("follower", "leader"):
            cmds = ", ".join(f"{k} {v:g}" for k, v in r[role]["by_command_per_beat"].items())
            lines.append(f"- Redis, a {role}: **{r[role]['commands_per_beat']:g} commands per beat** "
                         f"in {r[role]['round_trips_per_beat']} round trip(s) ({cmds}; commands a script runs "
                         "count as their own names).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--supervisors", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--redis-url")
    ap.add_argument("--json", default=str(ROOT / "docs" / "fleet_sim.json"))
    ap.add_argument("--markdown", action="store_true", help="regenerate docs/fleet.md's figures from --json")
    args = ap.parse_args()
    if args.markdown:
        data = json.loads(Path(args.json).read_text())
        doc = ROOT / "docs" / "fleet.md"
        text = re.sub(r"(<!-- fleet-sim -->\n).*?(\n<!-- /fleet-sim -->)", lambda m: m[1] + markdown(data) + m[2],
                      doc.read_text(), flags=re.S)
        doc.write_text(text)
        return 0
    data = {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
            "python": platform.python_version(), "planner": time_planner(args.nodes, args.supervisors, args.rounds)}
    if args.redis_url:
        data["redis"] = count_redis(args.redis_url)
    Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
