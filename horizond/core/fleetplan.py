"""The fleet budget: how many processes of a supervisor each node may run (pure, no I/O).

A supervisor with a fleet budget (`fleet_max_processes`, or a fleet-wide `scale --fleet`
total; the smaller wins) must never run more processes over all nodes than the budget. The
leader plans per-node caps from what each node reports, and each node clamps its balancer's
targets to its cap. Two steps, both here so they are tested exhaustively:

- target_caps: the split the fleet should converge to. Floors first (min_processes on each node,
  as long as the budget allows; else the budget is split fairly over the floors), then the rest
  of the budget water-filled over what the nodes want (their balancer's demand), never above a
  node's capacity (its max_processes, or what it runs now while its free memory is low).
- plan: the caps granted now. A node that must shrink is granted its new cap at once, but its
  processes still count (`held`: what it runs, or may still run under a grant it holds) until it
  reports fewer; a node that may grow gets only the room nobody holds. So the sum of what the
  nodes can run at any moment stays within the budget while the split moves.

On the node: node_cap turns the grant it holds into a cap (a valid grant: its cap; an expired
or missing one: what it runs now, so it never grows), and clamp_pools cuts the balancer's pool
targets to that cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from horizond.core.balancer import fit_cap, pool_floors


@dataclass(frozen=True)
class NodeNeed:
    """What one node reports for one budgeted supervisor (and what the leader knows it holds)."""

    demand: int  # processes its balancer wants (after its max_processes)
    floor: int  # its min_processes over its pools (what it runs with no work)
    capacity: int  # the most it can run: max_processes, or its current count while memory is low
    held: int = 0  # the most it may be running now: its processes, or a grant it may still act on


def budget_of(configured: int | None, scaled: int | None) -> int | None:
    """The fleet budget: fleet_max_processes and the fleet-wide scale total, the smaller wins."""
    given = [b for b in (configured, scaled) if b is not None]
    return max(0, min(given)) if given else None


def target_caps(budget: int, nodes: Mapping[str, NodeNeed]) -> dict[str, int]:
    """The fair split of `budget` (max-min fair over the nodes' wants, floors first).

    Deterministic: nodes are taken in name order, so ties always go the same way.
    """
    keys = sorted(nodes)
    if not keys:
        return {}
    budget = max(0, budget)
    cap_of = {k: max(0, nodes[k].capacity) for k in keys}
    floor = {k: min(max(0, nodes[k].floor), cap_of[k]) for k in keys}
    zero = dict.fromkeys(keys, 0)
    floor = fit_cap(keys, floor, zero, floor, budget)  # more floors than budget: split the budget over them
    want = {k: max(floor[k], min(max(0, nodes[k].demand), cap_of[k])) for k in keys}
    return fit_cap(keys, want, floor, want, budget)


def plan(budget: int, nodes: Mapping[str, NodeNeed]) -> dict[str, int]:
    """The caps to grant now: target_caps, with growth only out of room no node holds.

    Invariant: sum(max(cap, held)) <= budget whenever sum(held) <= budget, and sum(cap) <= budget
    always; a node's cap is never above its target (so never above its capacity).
    """
    target = target_caps(budget, nodes)
    held = {k: max(0, nodes[k].held) for k in target}
    caps = {k: min(target[k], held[k]) for k in target}
    room = max(0, budget) - sum(held.values())
    growers = [k for k in sorted(target) if target[k] > held[k]]
    if room <= 0 or not growers:
        return caps
    if sum(target[k] - held[k] for k in growers) <= room:
        return {**caps, **{k: target[k] for k in growers}}
    grown = fit_cap(growers, {k: target[k] for k in growers}, {k: held[k] for k in growers},
                    {k: target[k] for k in growers}, sum(held[k] for k in growers) + room)
    return {**caps, **grown}


def node_cap(budgeted: bool, grant: int | None, valid: bool, current: int) -> int | None:
    """The cap a node applies to one supervisor: None (no budget, no cap), its grant's cap while
    the grant is valid, else what it runs now (an expired grant never lets it grow)."""
    if not budgeted:
        return None
    if valid and grant is not None:
        return max(0, grant)
    return max(0, current)


def clamp_pools(targets: Mapping[str, int], cap: int | None, min_processes: int) -> dict[str, int]:
    """Pool targets (priority order) cut to sum to at most `cap`, floors kept while they fit:
    the balancer's own water-filling (balancer.fit_cap). No cap: the targets as they are."""
    if cap is None or sum(targets.values()) <= cap:
        return dict(targets)
    keys = list(targets)
    floors = pool_floors(len(keys), min_processes, max(0, cap)) if keys else []
    floor = {k: min(f, targets[k]) for k, f in zip(keys, floors, strict=True)}
    return fit_cap(keys, dict(targets), floor, dict(targets), max(0, cap))


def supervisor_need(pool_targets: Mapping[str, int], desired: int | None, min_processes: int,
                    max_processes: int, current: int, memory_ok: bool) -> tuple[int, int, int]:
    """(demand, floor, capacity) of one supervisor on one node, for the leader's plan."""
    floor = sum(pool_floors(len(pool_targets), min_processes, max_processes)) if pool_targets else 0
    demand = min(max_processes, max(desired or 0, sum(pool_targets.values())))
    capacity = max_processes if memory_ok else min(max_processes, max(current, floor))
    return demand, floor, capacity
