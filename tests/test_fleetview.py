"""The fleet's pure decisions: desired state after each command, entries, the merged view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from horizond.core import fleetview

NAMES = ["alpha", "beta", "gamma"]
commands = st.lists(st.tuples(st.sampled_from(["pause", "continue", "scale"]),
                              st.one_of(st.none(), st.sampled_from(NAMES)),
                              st.one_of(st.none(), st.integers(0, 50))), max_size=12)


def _apply(script):
    desired: dict[str, str] = {}
    for action, name, n in script:
        if action == "scale" and name is None:
            continue
        desired = fleetview.change(desired, action, name, n)
    return desired


@given(commands, st.sampled_from(NAMES))
def test_pause_and_continue_act_on_every_node_as_the_local_commands_would(script, name):
    """After any history: pause all pauses all; continue NAME frees NAME and leaves the others;
    continue all frees all; pause NAME pauses NAME and leaves the others."""
    desired = _apply(script)
    before = {n: fleetview.paused(desired, n) for n in NAMES}
    after_pause_all = fleetview.change(desired, "pause", None)
    assert all(fleetview.paused(after_pause_all, n) for n in NAMES)
    after_continue_all = fleetview.change(desired, "continue", None)
    assert not any(fleetview.paused(after_continue_all, n) for n in NAMES)
    one_freed = fleetview.change(desired, "continue", name)
    assert not fleetview.paused(one_freed, name)
    assert all(fleetview.paused(one_freed, n) == before[n] for n in NAMES if n != name)
    one_paused = fleetview.change(desired, "pause", name)
    assert fleetview.paused(one_paused, name)
    assert all(fleetview.paused(one_paused, n) == before[n] for n in NAMES if n != name)
    assert fleetview.held(desired, NAMES) == {n for n in NAMES if before[n]}


@given(commands)
def test_scale_stores_a_total_and_auto_drops_it(script):
    desired = _apply(script)
    assert fleetview.budget(fleetview.change(desired, "scale", "alpha", 12), "alpha") == 12
    assert fleetview.budget(fleetview.change(desired, "scale", "alpha", None), "alpha") is None
    # restart and terminate are one-off: they never change what is stored
    assert fleetview.change(desired, "restart", None) == desired == fleetview.change(desired, "terminate", None)


def _status(pid, sups):
    return {"pid": pid, "version": "0", "uptime": 5.0, "state": "running",
            "supervisors": [{"name": name, "state": "running", "processes": n, "target": n, "busy": 0,
                             "queues": {f"q{name}": {"processes": n, "size": size}},
                             "workers": [{"name": f"w{pid}-{name}-{i}"} for i in range(n)]}
                            for name, n, size in sups]}


entries_st = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10), st.integers(0, 100)), min_size=1, max_size=5)


@given(st.lists(entries_st, min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 30)),
       st.one_of(st.none(), st.integers(1, 30)))
def test_the_merged_view_sums_each_supervisor_and_queue_over_the_nodes(nodes, scale_total, fleet_max):
    entries = []
    for i, sups in enumerate(nodes):
        rows = {(f"s{k}"): (n, size) for k, n, size in sups}
        status = _status(100 + i, [(name, n, size) for name, (n, size) in rows.items()])
        entry = fleetview.entry(status, node=f"n{i}", host="h", heartbeat=1.0, now=1000.0 + i,
                                fleet_max={"s0": fleet_max}, extra={"demand": {}})
        assert fleetview.parse_entry(entry) == entry
        assert len(entry["workers"]) == sum(n for n, _ in rows.values())
        entries.append(entry)
    desired = fleetview.change({}, "scale", "s0", scale_total)
    view = fleetview.merge(entries, desired)
    assert set(view) == {"nodes", "supervisors", "queues"}
    assert [n["node"] for n in view["nodes"]] == sorted(e["node"] for e in entries)
    for row in view["supervisors"]:
        per_node = {e["node"]: s["processes"] for e in entries for s in e["supervisors"] if s["name"] == row["name"]}
        assert row["nodes"] == per_node and row["processes"] == sum(per_node.values())
        if row["name"] == "s0":
            limits = [v for v in (scale_total, fleet_max) if v is not None]
            assert row["budget"] == (min(limits) if limits else None)
        else:
            assert row["budget"] is None
    for queue, info in view["queues"].items():
        owners = [(e["last_seen"], s["queues"][queue]) for e in entries for s in e["supervisors"]
                  if queue in s["queues"]]
        assert info["processes"] == sum(q["processes"] for _, q in owners)
        assert info["size"] == max(owners, key=lambda o: o[0])[1]["size"]  # the most recent sample


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.sampled_from(["node", "host", "pid", "state", "last_seen", "supervisors"]),
                                 st.one_of(st.integers(), st.text(), st.none(), st.lists(st.none())))))
def test_junk_under_the_fleet_keys_is_never_taken_for_an_entry(junk):
    entry = fleetview.parse_entry(junk)
    if entry is not None:  # it has every field a view reads, of the right type
        fleetview.merge([entry], {})
