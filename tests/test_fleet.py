"""The fleet end to end: three real masters with distinct [fleet] node ids on one redis-server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from rq import Queue

from conftest import ROOT, Daemon, child_env, horizonctl, wait_until
from horizond.control.ctl import request

HEARTBEAT = 0.3

BODY = """
[fleet]
node = "{node}"
heartbeat = {heartbeat}

[supervisors.alpha]
queues = ["qa"]
min_processes = 1
max_processes = 1

[supervisors.beta]
queues = ["qb"]
min_processes = 1
max_processes = 1
"""


@pytest.fixture
def fleet(tmp_path, redis_url):
    started: list[Daemon] = []

    def start(node: str, folder: str | None = None, heartbeat: float = HEARTBEAT) -> Daemon:
        where = tmp_path / (folder or node)
        where.mkdir(exist_ok=True)
        daemon = Daemon(where, redis_url, BODY.format(node=node, heartbeat=heartbeat))
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.cleanup()


def _three(fleet, heartbeat: float = HEARTBEAT) -> list[Daemon]:
    nodes = [fleet(f"n{i}", heartbeat=heartbeat) for i in (1, 2, 3)]
    for node in nodes:
        node.wait_ready({"alpha": 1, "beta": 1})
    wait_until(lambda: len(_call(nodes[0], "nodes")) == 3, what="three nodes listed")
    return nodes


def _call(daemon: Daemon, cmd: str, **args):
    reply = request(daemon.socket, cmd, **args)
    assert reply["ok"], reply
    return reply["result"]


def _states(daemon: Daemon) -> dict[str, str]:
    return {s["name"]: s["state"] for s in daemon.status()["supervisors"]}


def test_fleet_pause_and_continue_reach_all_three_nodes_within_a_second(fleet):
    """With the default 2 s heartbeat: the wake channel, not the next beat, brings the command."""
    nodes = _three(fleet, heartbeat=2.0)
    for action, want in (("pause", "paused"), ("continue", "running")):
        sent_at = time.monotonic()
        sent = _call(nodes[1], "fleet", action=action)
        wait_until(lambda want=want: all(set(_states(n).values()) == {want} for n in nodes), timeout=1.0,
                   interval=0.02,
                   what=f"{action} on all three nodes")
        took = time.monotonic() - sent_at
        print(f"fleet {action}: every node {want} {took * 1000:.0f} ms after the command")
        assert took < 1.0
        assert sorted(sent["nodes"]) == ["n1", "n2", "n3"]
        wait_until(lambda sent=sent: len(_call(nodes[1], "fleet_confirmations", id=sent["id"])["confirmed"]) == 3,
                   timeout=1.0, what="three confirmations")
    # horizonctl reports each node's confirmation
    done = horizonctl("pause", "--fleet", "beta", socket_path=nodes[2].socket)
    assert done.returncode == 0, done.stdout + done.stderr
    for node in ("n1", "n2", "n3"):
        assert f'{node}: confirmed {{"paused": ["beta"]}}' in done.stdout, done.stdout
    wait_until(lambda: all(_states(n) == {"alpha": "running", "beta": "paused"} for n in nodes), timeout=1.0,
               what="beta paused everywhere, alpha running")


def test_a_node_started_while_the_fleet_is_paused_stays_paused(fleet, redis):
    first = fleet("n1")
    first.wait_ready({"alpha": 1, "beta": 1})
    _call(first, "fleet", action="pause", supervisor="alpha")
    wait_until(lambda: _states(first)["alpha"] == "paused", timeout=1.0, what="alpha paused")
    late = fleet("n2")
    late.wait_ready({"alpha": 1, "beta": 1})
    assert _states(late) == {"alpha": "paused", "beta": "running"}  # from its first status on
    job = Queue("qa", connection=redis).enqueue("testjobs.record", "held")
    time.sleep(HEARTBEAT * 4)  # several beats: nobody runs it
    assert redis.hget("test:runs", "held") is None and _states(late)["alpha"] == "paused"
    # a local continue does not override the fleet's pause; continue --fleet does
    refused = request(late.socket, "continue", supervisor="alpha")
    assert not refused["ok"] and "paused fleet-wide: alpha" in refused["error"] and "--fleet" in refused["error"]
    done = horizonctl("continue", "--fleet", "alpha", socket_path=late.socket)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: redis.hget("test:runs", "held") == b"1", timeout=5, what="the job to run once continued")
    assert job.get_status(refresh=True) == "finished"


def test_status_fleet_merges_the_three_nodes(fleet):
    nodes = _three(fleet)
    _call(nodes[0], "fleet", action="scale", supervisor="alpha", processes=5)
    view = json.loads(horizonctl("status", "--fleet", "--json", socket_path=nodes[2].socket).stdout)
    assert {"nodes", "supervisors", "queues"} <= set(view) and view["error"] is None
    assert [n["node"] for n in view["nodes"]] == ["n1", "n2", "n3"]
    assert {n["pid"] for n in view["nodes"]} == {n.proc.pid for n in nodes}
    for row in view["nodes"]:
        assert set(row) == {"node", "host", "pid", "state", "last_seen", "supervisors"}
        assert {s["name"] for s in row["supervisors"]} == {"alpha", "beta"}
        local = {s["name"]: s for s in nodes[int(row["node"][1]) - 1].status()["supervisors"]}
        for sup in row["supervisors"]:  # as in status --json (the worker rows are `horizonctl workers`)
            assert set(local[sup["name"]]) - {"workers"} <= set(sup)
    sups = {s["name"]: s for s in view["supervisors"]}
    assert sups["alpha"] == {"name": "alpha", "processes": 3, "budget": 5, "nodes": {"n1": 1, "n2": 1, "n3": 1}}
    assert sups["beta"]["budget"] is None and sups["beta"]["processes"] == 3
    assert view["queues"]["qa"] == {"size": 0, "processes": 3}
    _call(nodes[0], "fleet", action="scale", supervisor="alpha", processes="auto")
    assert _call(nodes[1], "fleet_status")["supervisors"][0]["budget"] is None
    text = horizonctl("status", "--fleet", socket_path=nodes[0].socket)
    assert text.returncode == 0 and "alpha" in text.stdout and "n1 1, n2 1, n3 1" in text.stdout, text.stdout


def test_a_killed_node_leaves_the_list_after_three_beats_a_stopped_one_at_once(fleet, redis):
    nodes = _three(fleet)
    nodes[2].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    nodes[2].wait_exit(5)
    wait_until(lambda: "n3" not in {r["node"] for r in _call(nodes[0], "nodes")}, timeout=3 * HEARTBEAT + 2,
               interval=0.02, what="n3 gone from nodes")
    gone_after = time.monotonic() - killed_at
    print(f"a SIGKILLed node left `nodes` after {gone_after:.2f} s (3 beats = {3 * HEARTBEAT:.1f} s)")
    assert gone_after <= 3 * HEARTBEAT + 0.5
    nodes[1].signal(signal.SIGTERM)
    assert nodes[1].wait_exit(30) == 0
    assert not redis.exists("horizond:fleet:node:n2")  # at once, not 3 beats later
    assert [r["node"] for r in _call(nodes[0], "nodes")] == ["n1"]
    listing = horizonctl("nodes", socket_path=nodes[0].socket)
    assert listing.returncode == 0 and "n1" in listing.stdout and "n2" not in listing.stdout


def test_a_duplicate_node_id_is_refused_naming_the_first_and_a_crashed_one_is_replaced_at_once(fleet):
    first = fleet("n1")
    first.wait_ready({"alpha": 1, "beta": 1})
    second = fleet("n1", folder="again")
    assert second.wait_exit(20) == 1
    refusal = next(e for e in second.log_events() if e.get("event") == "fleet_node_duplicate")
    assert "fleet node 'n1' is already live" in refusal["message"]
    assert f"pid {first.proc.pid}" in refusal["message"] and "host " in refusal["message"]
    assert "last seen" in refusal["message"] and "s ago" in refusal["message"]
    assert first.status()["state"] == "running"
    # the first crashes; restarted on the same host it takes its id back without waiting for the expiry
    first.signal(signal.SIGKILL)
    first.wait_exit(5)
    third = fleet("n1", folder="restart")
    third.wait_ready({"alpha": 1, "beta": 1}, timeout=2 * HEARTBEAT + 10)
    assert any(e.get("event") == "fleet_node_taken_over" for e in third.log_events())
    assert [(r["node"], r["pid"]) for r in _call(third, "nodes")] == [("n1", third.proc.pid)]


@pytest.mark.parametrize("table, key, problem", [
    ('node = "two words"', "node", "letters, digits"),
    ('node = ""', "node", "letters, digits"),
    ("node = 7", "node", "expected a string"),
    ("heartbeat = 0", "heartbeat", "between 0.1 and 3600"),
    ('heartbeat = "2"', "heartbeat", "expected a number"),
    ("beat = 2", "beat", "did you mean 'heartbeat'"),
])
def test_bad_fleet_values_are_refused_naming_the_key(tmp_path, table, key, problem):
    path = tmp_path / "h.toml"
    path.write_text(f'[fleet]\n{table}\n[supervisors.alpha]\nqueues = ["qa"]\n')
    done = subprocess.run([sys.executable, "-m", "horizond", "--check-config", "--config", str(path)],
                          capture_output=True, text=True, env=child_env(), cwd=ROOT)
    assert done.returncode == 2
    assert f"[fleet] key '{key}'" in done.stderr and problem in done.stderr, done.stderr


def test_check_config_shows_the_fleet_node_and_heartbeat(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[fleet]\nnode = "web-1"\nheartbeat = 0.5\n[supervisors.alpha]\nqueues = ["qa"]\n')
    done = subprocess.run([sys.executable, "-m", "horizond", "--check-config", "--config", str(path)],
                          capture_output=True, text=True, env=child_env(), cwd=ROOT)
    assert done.returncode == 0 and "fleet node 'web-1', heartbeat 0.5 s" in done.stdout, done.stdout


def test_read_only_clients_cannot_send_fleet_commands(redis_url, tmp_path):
    from horizond.core.config import parse
    from horizond.supervise.master import Master

    config = parse(f'[redis]\nurl = "{redis_url}"\n[control]\nsocket = "{tmp_path}/c.sock"\n'
                   '[supervisors.alpha]\nqueues = ["qa"]\n', "test.toml")
    master = Master(config, load_config=lambda: config)
    master.add_supervisor(config.supervisors[0], paused=False)
    try:
        for request_ in ({"cmd": "fleet", "args": {"action": "pause"}},
                         {"cmd": "fleet", "args": {"action": "terminate"}},
                         {"cmd": "fleet_confirmations", "args": {"id": "1-0"}}):
            reply = master._commands.handle(request_, "read")
            assert reply == {"ok": False, "error": f"permission denied: {request_['cmd']!r} needs full access "
                                                   "(read-only client)"}
        assert master._commands.handle({"cmd": "nodes"}, "read")["ok"]
        assert master._commands.handle({"cmd": "fleet_status"}, "read")["ok"]
        assert not master._commands.handle({"cmd": "fleet", "args": {"action": "explode"}}, "full")["ok"]
        bad = master._commands.handle({"cmd": "fleet", "args": {"action": "scale", "supervisor": "alpha",
                                                                 "processes": -1}}, "full")
        assert not bad["ok"] and "scale --fleet" in bad["error"]
        unknown = master._commands.handle({"cmd": "fleet", "args": {"action": "pause", "supervisor": "nope"}}, "full")
        assert not unknown["ok"] and "unknown supervisor 'nope'" in unknown["error"]
    finally:
        master.selector.close()


def test_with_redis_away_the_master_runs_on_and_status_fleet_answers_with_an_error(tmp_path):
    from conftest import RedisServer

    server = RedisServer(tmp_path)
    daemon = Daemon(tmp_path, server.url, BODY.format(node="solo", heartbeat=HEARTBEAT))
    try:
        daemon.wait_ready({"alpha": 1, "beta": 1})
        server.stop()
        view = wait_until(lambda: (v := _call(daemon, "fleet_status"))["error"] and v, timeout=5,
                          what="an error in status --fleet")
        assert "Redis unreachable" in view["error"] and [n["node"] for n in view["nodes"]] == ["solo"]
        time.sleep(HEARTBEAT * 4)
        events = [e for e in daemon.log_events() if e.get("event") == "fleet_unavailable"]
        assert len(events) == 1  # said once, not once per beat
        assert daemon.status()["pid"] == daemon.proc.pid
        done = horizonctl("status", "--fleet", socket_path=daemon.socket)
        assert done.returncode == 3 and "Redis unreachable" in done.stdout
    finally:
        daemon.cleanup()
        server.stop()


def test_restart_and_terminate_fleet_reach_every_node_and_each_confirms(fleet):
    nodes = _three(fleet)
    def alpha_pids(node: Daemon) -> set[int]:
        return {w["pid"] for s in node.status()["supervisors"] if s["name"] == "alpha" for w in s["workers"]}

    before = {n.proc.pid: alpha_pids(n) for n in nodes}
    done = horizonctl("restart", "--fleet", "alpha", socket_path=nodes[0].socket)
    assert done.returncode == 0 and done.stdout.count('confirmed {"restarting": ["alpha"]}') == 3, done.stdout
    wait_until(lambda: all(alpha_pids(n) and alpha_pids(n).isdisjoint(before[n.proc.pid]) for n in nodes),
               timeout=10, what="alpha's workers replaced on every node")
    done = horizonctl("terminate", "--fleet", socket_path=nodes[1].socket)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("confirmed {\"pid\"") == 3, done.stdout
    for node in nodes:
        assert node.wait_exit(30) == 0
