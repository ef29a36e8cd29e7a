"""The fleet budget planner (core/fleetplan.py): property tests over random fleets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from horizond.core.fleetplan import NodeNeed, budget_of, clamp_pools, node_cap, plan, target_caps

small = st.integers(0, 40)


@st.composite
def fleets(draw, held: bool = True):
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=12, unique=True))
    nodes = {}
    for name in names:
        capacity = draw(st.integers(0, 30))
        floor = draw(st.integers(0, capacity))
        nodes[name] = NodeNeed(demand=draw(small), floor=floor, capacity=capacity,
                               held=draw(st.integers(0, 35)) if held else 0)
    return draw(st.integers(0, 200)), nodes


@given(fleets())
def test_caps_never_sum_above_the_budget_nor_exceed_a_capacity(case):
    budget, nodes = case
    for caps in (target_caps(budget, nodes), plan(budget, nodes)):
        assert sum(caps.values()) <= budget
        assert all(0 <= caps[n] <= nodes[n].capacity for n in nodes)
        assert set(caps) == set(nodes)


@given(fleets())
def test_what_the_nodes_can_run_during_a_move_stays_within_the_budget(case):
    """A shrinking node still holds its processes until it reports fewer: growth comes only from
    room nobody holds, so sum(max(cap, held)) never passes the budget (when it did not already)."""
    budget, nodes = case
    caps = plan(budget, nodes)
    held = sum(n.held for n in nodes.values())
    if held <= budget:
        assert sum(max(caps[k], nodes[k].held) for k in nodes) <= budget
    else:  # over the budget (it was lowered): nobody grows
        assert all(caps[k] <= nodes[k].held for k in nodes)


@given(fleets(held=False))
def test_floors_are_honoured_when_the_budget_allows(case):
    budget, nodes = case
    caps = plan(budget, nodes)  # nothing held: a fresh fleet
    if sum(min(n.floor, n.capacity) for n in nodes.values()) <= budget:
        assert all(caps[k] >= min(n.floor, n.capacity) for k, n in nodes.items())


@given(fleets(held=False))
def test_the_budget_is_used_while_someone_wants_more(case):
    budget, nodes = case
    caps = target_caps(budget, nodes)
    wants = {k: min(max(n.demand, n.floor), n.capacity) for k, n in nodes.items()}
    if sum(caps.values()) < budget:
        assert all(caps[k] >= wants[k] for k in nodes)  # only when every want is met


@given(fleets(held=False))
def test_fair_split_no_node_wanting_more_has_two_fewer_than_another_above_its_floor(case):
    """Max-min fairness: a node short of its want never has 2+ fewer than a node given more than
    its floor (the budget would rather have gone to the poorer one)."""
    budget, nodes = case
    caps = target_caps(budget, nodes)
    wants = {k: min(max(n.demand, n.floor), n.capacity) for k, n in nodes.items()}
    short = [k for k in nodes if caps[k] < wants[k]]
    rich = [k for k in nodes if caps[k] > min(nodes[k].floor, nodes[k].capacity)]
    for a in short:
        for b in rich:
            assert caps[a] >= caps[b] - 1, (a, b, caps)


@given(fleets())
@settings(max_examples=50)
def test_deterministic_whatever_the_order_of_the_nodes(case):
    budget, nodes = case
    reordered = dict(reversed(list(nodes.items())))
    assert plan(budget, nodes) == plan(budget, reordered) == plan(budget, dict(nodes))


def test_a_move_between_nodes_waits_for_the_shrinking_node():
    """Node a holds 3 of a budget of 4 and must give 2 to b: b gets only the free one now."""
    nodes = {"a": NodeNeed(demand=1, floor=0, capacity=4, held=3), "b": NodeNeed(demand=3, floor=0, capacity=4, held=1)}
    assert target_caps(4, nodes) == {"a": 1, "b": 3}
    assert plan(4, nodes) == {"a": 1, "b": 1}
    shrunk = {"a": NodeNeed(1, 0, 4, held=1), "b": NodeNeed(3, 0, 4, held=1)}
    assert plan(4, shrunk) == {"a": 1, "b": 3}


def test_budget_of_the_smaller_wins():
    assert budget_of(None, None) is None
    assert budget_of(10, None) == 10 and budget_of(None, 4) == 4 and budget_of(10, 4) == 4 and budget_of(3, 9) == 3


def test_node_cap_never_grows_without_a_valid_grant():
    assert node_cap(False, 5, True, 2) is None  # no budget: no cap
    assert node_cap(True, 5, True, 2) == 5
    assert node_cap(True, 5, False, 2) == 2  # expired: what it runs now
    assert node_cap(True, None, False, 0) == 0  # never granted: nothing


@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 20), min_size=1), st.none() | st.integers(0, 50),
       st.integers(0, 5))
def test_clamp_pools_fits_the_cap_and_never_raises_a_target(targets, cap, min_processes):
    out = clamp_pools(targets, cap, min_processes)
    assert set(out) == set(targets) and all(out[k] <= targets[k] for k in targets)
    if cap is None or sum(targets.values()) <= cap:
        assert out == targets
    else:
        assert sum(out.values()) == cap  # cut to the cap, not below
