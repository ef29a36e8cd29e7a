"""`horizonctl`: talk to a running horizond over its control socket.

Every command exits 0 on success and non-zero with a one-line error on stderr
otherwise; `status` follows Horizon's codes (0 running, 1 paused, 2 not running).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

from horizond.configfile import load_control, load_web
from horizond.control import sockdir, webusers
from horizond.core import health
from horizond.core.config import ConfigError

EXIT_RUNNING, EXIT_PAUSED, EXIT_NOT_RUNNING = 0, 1, 2
EXIT_ERROR = 3
SERVICE_SOCKET = "/run/horizond/horizond.sock"


class NotRunning(Exception):
    pass


class Failed(Exception):
    pass


class Endpoint(str):
    """A socket path, and the one uid besides root and our own that may serve it ([control] user)."""

    daemon_user: str | None = None

    def __new__(cls, path: str, daemon_user: str | None = None):
        endpoint = super().__new__(cls, path)
        endpoint.daemon_user = daemon_user
        return endpoint


def find_socket(args) -> Endpoint:
    """--socket, else --config's socket, else $HORIZOND_SOCKET, else the default config's.

    Only in the last case is the service's socket tried as well (an operator's
    default path differs from the service's); a named config is never second-guessed.
    Only [control] is read: no secret of the daemon's is needed to talk to it.
    """
    environ = dict(os.environ)
    if args.config:
        environ.pop("HORIZOND_SOCKET", None)
    try:
        control = load_control(args.config, environ)
    except (ConfigError, OSError) as exc:
        if args.socket or (environ.get("HORIZOND_SOCKET") and not args.config):
            control = {"socket_path": None, "control_user": None}  # the file is not needed to find it
        else:
            raise Failed(f"cannot find the control socket: {exc}") from None
    user = control["control_user"]
    if args.socket:
        return Endpoint(args.socket, user)
    if not args.config and environ.get("HORIZOND_SOCKET"):
        return Endpoint(environ["HORIZOND_SOCKET"], user)
    configured = control["socket_path"]
    if args.config or os.environ.get("HORIZOND_CONFIG") or os.path.exists(configured):
        return Endpoint(configured, user)
    return Endpoint(SERVICE_SOCKET if os.path.exists(SERVICE_SOCKET) else configured, user)


def request(path: str, cmd: str, timeout: float = 30.0, **args) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect(sock, path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NotRunning(f"horizond is not running (no daemon on {path}: {exc.strerror})") from None
    except PermissionError:
        sock.close()
        raise Failed(f"permission denied on {path}") from None
    with sock:
        problem = sockdir.untrusted_server(sock, path, getattr(path, "daemon_user", None))
        if problem:
            raise Failed(problem)
        try:
            sock.sendall(json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        except OSError:
            pass  # a refused client is hung up on at once: its answer is still there to read
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotRunning(f"horizond closed the connection on {path} without answering")
    if not data.endswith(b"\n"):  # a reply comes in pieces: this one stopped short
        raise Failed(f"horizond closed the connection on {path} after {len(data)} bytes of its reply")
    return json.loads(data)


def _connect(sock: socket.socket, path: str) -> None:
    """Wait in the kernel's queue while the daemon's backlog is full (a flood of other clients):
    a non-blocking connect would be refused with EAGAIN, and polling loses the race to the flood."""
    timeout = sock.gettimeout()
    sock.settimeout(None)
    wait = 0.0 if timeout is None else max(timeout, 0.001)  # 0.0: no limit, like settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(wait), int(wait % 1 * 1e6)))
    try:
        sock.connect(path)
    except BlockingIOError:
        raise Failed(f"horizond on {path} accepted no connection in {timeout:g} s (its backlog stayed full)") from None
    finally:
        sock.settimeout(timeout)


def call(path: str, cmd: str, **args):
    response = request(path, cmd, **args)
    if not response.get("ok"):
        raise Failed(response.get("error", "unknown error"))
    return response["result"]


# --- output --------------------------------------------------------------------------


def print_status(status: dict) -> None:
    redis = status["redis"]
    print(f"horizond {status['state']} (pid {status['pid']}, up {status['uptime']:.0f}s, config {status['config']})")
    print(f"redis {redis['url']}: {'ok' if redis['ok'] else 'UNREACHABLE ' + str(redis['error'])}")
    print_supervisors(status["supervisors"])
    if status.get("rate_limits"):
        _print_rate_limits(status["rate_limits"], len(status["rate_limits"]))
    print_breakers(status.get("breakers") or [])
    for row in status.get("start_rates", ()):
        print(f"limit {row['pattern']}: {row['started']} of {row['allowed']} starts "
              f"in the last {row['per_seconds']:g} s")


def print_supervisors(sups: list[dict]) -> None:
    print(f"{'SUPERVISOR':<20} {'STATE':<9} {'PROCS':>5} {'BUSY':>5} {'TARGET':>6}  QUEUES (pending)")
    for sup in sups:
        queues = ", ".join(f"{q} ({info['size'] if info['size'] is not None else '?'})"
                           for q, info in sup["queues"].items())
        target = f"{sup['target']}{'*' if sup.get('pinned') is not None else ''}"
        print(f"{sup['name']:<20} {sup['state']:<9} {sup['processes']:>5} {sup['busy']:>5} {target:>6}  {queues}")
        for b in sup["backoff"]:
            print(f"  ! slot {b['slot']} crash-looping: {b['failures']} failures, last {b['last_exit']}, "
                  f"next try in {b['restart_in']}s")


def print_workers(workers: list[dict]) -> None:
    print(f"{'PID':>7} {'SUPERVISOR':<20} {'STATE':<9} {'AGE':>7} {'RSS MB':>7} {'JOBS':>5}  CURRENT JOB")
    for w in workers:
        job = f"{w['job_id']} on {w['queue']}" if w.get("job_id") else "-"
        print(f"{w['pid']:>7} {w['supervisor']:<20} {w['state']:<9} {w['uptime']:>6.0f}s "
              f"{w['rss'] / 1048576:>7.1f} {w['jobs']:>5}  {job}")


# --- commands --------------------------------------------------------------------------


def cmd_status(path, args) -> int:
    if args.fleet:
        return cmd_fleet_status(path, args)
    result = call(path, "status")
    print(json.dumps(result, indent=2)) if args.json else print_status(result)
    return EXIT_PAUSED if result["state"] == "paused" else EXIT_RUNNING


def cmd_table(path, args) -> int:
    extra = {"supervisor": args.supervisor} if getattr(args, "supervisor", None) else {}
    result = call(path, args.command, **extra)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        (print_supervisors if args.command == "supervisors" else print_workers)(result)
    return 0


def cmd_config(path, args) -> int:
    result = call(path, "config")
    sys.stdout.write(f"# effective config of the running daemon (from {result['source']})\n{result['toml']}")
    return 0


def cmd_pause(path, args) -> int:
    if args.fleet:
        return fleet_command(path, args.command, args.supervisor)
    names = call(path, "pause" if args.command == "pause" else "continue", supervisor=args.supervisor)
    verb, key = ("paused", "paused") if args.command == "pause" else ("continued", "continued")
    print(f"{verb}: {', '.join(names[key]) or 'nothing'}")
    return 0


def cmd_scale(path, args) -> int:
    value = args.processes
    if value != "auto":
        try:
            value = int(value)
        except ValueError:
            raise Failed(f"scale: PROCESSES must be a whole number or 'auto', got {value!r}") from None
    if args.fleet:
        return fleet_command(path, "scale", args.supervisor, processes=value)
    result = call(path, "scale", supervisor=args.supervisor, processes=value)
    how = "auto (configured balancing)" if result["pinned"] is None else f"pinned at {result['pinned']}"
    print(f"{result['supervisor']}: {how}, target {result['target']} processes")
    return 0


def cmd_restart(path, args) -> int:
    if args.fleet:
        return fleet_command(path, "restart", args.supervisor)
    result = call(path, "restart", supervisor=args.supervisor)
    print(f"restarting (rolling, in-flight jobs finish): {', '.join(result['restarting'])}")
    return 0


def cmd_reload(path, args) -> int:
    result = call(path, "reload")
    parts = [f"{k}: {', '.join(result[k])}" for k in ("added", "removed", "changed") if result[k]]
    print("reloaded; " + ("; ".join(parts) if parts else "no supervisor changed"))
    return 0


def cmd_terminate(path, args) -> int:
    if args.fleet:
        if args.wait:
            raise Failed("terminate --fleet does not take --wait (other hosts' daemons cannot be waited for here)")
        return fleet_command(path, "terminate", None)
    pid = call(path, "terminate")["pid"]
    print(f"horizond (pid {pid}) is stopping; in-flight jobs finish first")
    if args.wait:
        while not _gone(pid):
            time.sleep(0.1)
        print("horizond has stopped")
    return 0


# --- the fleet ----------------------------------------------------------------------------------

CONFIRM_WITHIN = 3.0  # a node that has not confirmed a fleet command by then is named


def fleet_command(path, action: str, supervisor: str | None, **args) -> int:
    """Send a fleet command through the local daemon; wait up to 3 s for each node's confirmation
    (the daemon never waits: this client polls it). Exit 0 when every node confirmed, 1 if not."""
    sent = call(path, "fleet", action=action, supervisor=supervisor, **args)
    expected = sent["nodes"]
    what = " ".join(str(x) for x in (action, supervisor, args.get("processes")) if x is not None)
    print(f"fleet {what}: sent to {len(expected)} node(s) (command {sent['id']})")
    deadline = time.monotonic() + CONFIRM_WITHIN
    confirmed: dict = {}
    note = ""
    while True:
        try:
            confirmed = call(path, "fleet_confirmations", id=sent["id"])["confirmed"]
        except NotRunning:  # terminate --fleet: the local daemon itself has gone
            note = " (the local daemon stopped: no more confirmations can be read here)"
            break
        if set(expected) <= set(confirmed) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    failed = 0
    for node in sorted(set(expected) | set(confirmed)):
        reply = confirmed.get(node)
        if reply is None:
            failed += 1
            print(f"  {node}: did not confirm within {CONFIRM_WITHIN:g} s{note}")
        elif reply.get("ok"):
            print(f"  {node}: confirmed {json.dumps(reply.get('result'), sort_keys=True)}")
        else:
            failed += 1
            print(f"  {node}: refused: {reply.get('error')}")
    missing = sorted(set(expected) - set(confirmed))
    if missing:
        print(f"not confirmed within {CONFIRM_WITHIN:g} s: {', '.join(missing)}", file=sys.stderr)
    return 1 if failed else 0


def _ago(epoch: float) -> str:
    return f"{max(0.0, time.time() - epoch):.1f}s ago"


def cmd_nodes(path, args) -> int:
    rows = call(path, "nodes")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NODE':<24} {'HOST':<24} {'PID':>7} {'STATE':<9} {'SEEN':>10} {'SUPS':>4} {'PROCS':>5}  VERSION")
    for r in rows:
        print(f"{r['node']:<24} {r['host']:<24} {r['pid']:>7} {r['state']:<9} {_ago(r['last_seen']):>10} "
              f"{r['supervisors']:>4} {r['processes']:>5}  {r.get('version') or '-'}")
    return 0


def cmd_fleet_status(path, args) -> int:
    view = call(path, "fleet_status")
    if args.json:
        print(json.dumps(view, indent=2))
        return EXIT_ERROR if view.get("error") else EXIT_RUNNING
    if view.get("error"):
        print(f"warning: {view['error']}")
    print(f"fleet: {len(view['nodes'])} node(s); this is {view['node']}")
    print(f"{'NODE':<24} {'HOST':<24} {'PID':>7} {'STATE':<9} {'SEEN':>10}  SUPERVISORS (processes)")
    for n in view["nodes"]:
        sups = ", ".join(f"{s['name']} ({s['processes']}{', paused' if s.get('paused') else ''})"
                         for s in n["supervisors"])
        print(f"{n['node']:<24} {n['host']:<24} {n['pid']:>7} {n['state']:<9} {_ago(n['last_seen']):>10}  {sups}")
    print(f"\n{'SUPERVISOR':<20} {'PROCS':>5} {'BUDGET':>6}  PER NODE")
    for s in view["supervisors"]:
        budget = "-" if s["budget"] is None else s["budget"]
        per_node = ", ".join(f"{node} {n}" for node, n in s["nodes"].items())
        print(f"{s['name']:<20} {s['processes']:>5} {budget:>6}  {per_node}")
    print(f"\n{'QUEUE':<24} {'SIZE':>7} {'PROCS':>5}")
    for name, q in view["queues"].items():
        print(f"{name:<24} {q['size'] if q['size'] is not None else '?':>7} {q['processes']:>5}")
    return EXIT_ERROR if view.get("error") else EXIT_RUNNING


def _seconds(value) -> str:
    if value is None:
        return "-"
    if value == float("inf"):
        return "never"
    return f"{value:.2f}s" if value < 10 else f"{value:.0f}s"


def cmd_stats(path, args) -> int:
    result = call(path, "stats" if args.command == "stats" else "queues")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    rows = result["queues"] if args.command == "stats" else result
    if args.command == "stats":
        print(f"jobs/min {result['jobs_per_minute']}  failed (last hour) {result['failed_last_hour']}  "
              f"processed {result['processed']}  failed {result['failed']}  processes {result['processes']}")
    print(f"{'QUEUE':<24} {'PENDING':>7} {'PROCS':>5} {'JOBS/MIN':>8} {'FAILED/H':>8} {'RUNTIME':>8} "
          f"{'WAIT':>7} {'EST WAIT':>8} {'CLEAR IN':>8}")
    for r in rows:
        print(f"{r['queue']:<24} {r['pending']:>7} {r['processes']:>5} {r['jobs_per_minute']:>8} "
              f"{r['failed_last_hour']:>8} {_seconds(r['recent_runtime']):>8} {_seconds(r['wait']):>7} "
              f"{_seconds(r['estimated_wait']):>8} {_seconds(r['time_to_clear']):>8}")
    if args.command == "stats" and result["jobs"]:
        print(f"\n{'QUEUE':<24} {'FUNCTION':<40} {'DONE':>7} {'FAILED':>7} {'RUNTIME':>8}")
        for j in result["jobs"]:
            print(f"{j['queue']:<24} {str(j['func'])[:40]:<40} {j['processed']:>7} {j['failed']:>7} "
                  f"{_seconds(j['runtime']):>8}")
    if args.command == "stats" and result.get("rate_limits"):
        _print_rate_limits(result["rate_limits"], result.get("rate_limit_keys", 0))
    return 0


def _print_rate_limits(rows: list[dict], total: int) -> None:
    """RQ 3 rate limits: waiting jobs are not in any queue, so they show only here."""
    print(f"\n{'RATE LIMIT':<32} {'CONCURRENCY':>11} {'IN USE':>6} {'WAITING':>7}")
    for r in rows:
        print(f"{r['key'][:32]:<32} {r['concurrency']:>11} {r['slots_used']:>6} {r['waiting']:>7}")
    if total > len(rows):
        print(f"... and {total - len(rows)} more keys (the busiest are shown)")


def cmd_trends(path, args) -> int:
    rows = call(path, "trends", queue=args.queue, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'TIME':<20} {'PENDING':>7} {'PROCS':>5} {'JOBS/MIN':>8} {'FAILED/H':>8} {'RUNTIME':>8} {'WAIT':>7}")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
        runtime = _seconds(float(r["recent_runtime"])) if r["recent_runtime"] is not None else "-"
        wait = _seconds(float(r["wait"])) if r["wait"] is not None else "-"
        print(f"{when:<20} {r['pending']:>7} {r['processes']:>5} {r['jobs_per_minute']:>8} "
              f"{r['failed_last_hour']:>8} {runtime:>8} {wait:>7}")
    return 0


def cmd_breakers(path, args) -> int:
    if args.command == "breaker":
        result = call(path, "breaker", action=args.action, name=args.name)
        print(f"breaker {result['breaker']}: forced {result['forced']} (every node acts at its next sample, "
              f"within 2 s)")
        return 0
    rows = call(path, "breakers")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no [breakers] in the config")
    print_breakers(rows)
    return 0


def print_breakers(rows: list[dict]) -> None:
    for b in rows:
        extra = " (forced)" if b.get("forced") else f", half-open in {b['opens_in']:.0f} s" \
            if b.get("opens_in") is not None else f", probe {b['probe']}" if b.get("probe") else ""
        print(f"breaker {b['name']}: {b['state']}{extra}; {b.get('failures', 0)} of {b['threshold']} failures in "
              f"{b['window']:g} s; queues {', '.join(b['queues'])}")


def cmd_cron(path, args) -> int:
    rows = call(path, "cron")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no [cron] entries and no [maintenance] in the config")
        return 0
    print(f"{'NAME':<20} {'SCHEDULE':<16} {'NEXT':<21} {'LAST':<21} WHAT")
    for r in rows:
        what = f"{r['func']} on {r['queue']}" if r["func"] else f"prune failed jobs older than " \
            f"{r['prune_failed_hours']} h" if r.get("prune_failed_hours") else "maintenance"
        print(f"{r['name']:<20} {r['cron']:<16} {r['next']:<21} {r['last'] or '-':<21} {what}")
    return 0


def cmd_batches(path, args) -> int:
    showing = args.command == "batch"
    result = call(path, "batch_show", name=args.name) if showing else call(path, "batches", limit=args.limit)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [result] if showing else result["batches"]
    print(f"{'BATCH':<34} {'TOTAL':>7} {'DONE %':>7} {'FINISHED':>8} {'FAILED':>7} {'PENDING':>7} {'EXPIRED':>7}")
    for r in rows:
        print(f"{r['name'][:34]:<34} {r['total']:>7} {r['progress']:>7} {r['finished']:>8} {r['failed']:>7} "
              f"{r['pending']:>7} {r['expired']:>7}")
    if showing and result.get("failed_ids"):
        print("failed: " + ", ".join(result["failed_ids"]))
    elif not showing and result["total"] > len(rows):
        print(f"... {result['total'] - len(rows)} more batches (--limit)")
    return 0


def cmd_health(path, args) -> int:
    try:
        result = call(path, "health")
    except NotRunning as exc:
        result = {"status": "red", "indicators": [{"name": "daemon", "level": "red", "value": None,
                                                   "detail": str(exc)}]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"health: {result['status'].upper()}")
        for ind in result["indicators"]:
            print(f"  {ind['level']:<7} {ind['name']:<15} {ind['detail']}")
    return health.EXIT.get(result["status"], health.EXIT[health.RED])


def cmd_failed(path, args) -> int:
    if args.rest and (args.rest[0] != "show" or len(args.rest) != 2):
        raise Failed("usage: horizonctl failed [--queue Q] [--limit N] [--json] | failed show ID")
    if args.rest:
        job = call(path, "failed_show", job_id=args.rest[1])
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            for key in ("id", "queue", "func", "args", "kwargs", "description", "enqueued_at", "failed_at"):
                print(f"{key + ':':<13} {job[key]}")
            policy = {k: v for k, v in (job.get("policy") or {}).items() if v is not None}
            if policy:
                print(f"{'policy:':<13} {json.dumps(policy, separators=(', ', ': '))}")
            print(job["traceback"].rstrip())
        return 0
    jobs = call(path, "failed", queue=args.queue, limit=args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    print(f"{'ID':<38} {'QUEUE':<16} {'FAILED AT':<20} {'FUNCTION':<28} EXCEPTION")
    for job in jobs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["failed_at"])) if job["failed_at"] else "-"
        print(f"{job['id']:<38} {job['queue']:<16} {when:<20} {str(job['func'])[:28]:<28} {job['exception'][:80]}")
    return 0


def _walk(path, cmd: str, key: str, **args) -> int:
    """Repeat a bulk command with the cursor it returns until it is done; the total."""
    total, cursor = 0, None
    while True:
        result = call(path, cmd, cursor=cursor, **args)
        total += result[key] if isinstance(result[key], int) else len(result[key])
        cursor = result["cursor"]
        if cursor is None:
            return total


def cmd_retry(path, args) -> int:
    if args.ids == ["all"]:
        count = _walk(path, "retry", "retried", all=True, queue=args.queue)
    elif args.queue:
        raise Failed("retry: --queue goes with 'all' (retry all --queue Q)")
    else:
        count = len(call(path, "retry", ids=args.ids)["retried"])
    print(f"retried {count} job(s)")
    return 0


def cmd_forget(path, args) -> int:
    print(f"forgot {len(call(path, 'forget', ids=args.ids)['forgotten'])} job(s)")
    return 0


def cmd_flush(path, args) -> int:
    print(f"deleted {_walk(path, 'flush', 'deleted', queue=args.queue)} failed job(s)")
    return 0


def cmd_prune(path, args) -> int:
    print(f"deleted {_walk(path, 'prune_failed', 'deleted', hours=args.hours, queue=args.queue)} failed job(s)")
    return 0


def cmd_clear(path, args) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failed(f"clear: deleting the pending jobs of {args.queue!r} needs --yes (no terminal to ask)")
        if input(f"Delete every pending job of queue {args.queue!r}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    result = call(path, "clear", queue=args.queue)
    print(f"deleted {result['deleted']} pending job(s) from {result['queue']}")
    return 0


def _gone(pid: int) -> bool:
    """The daemon's process has exited (or is only a zombie awaiting its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def cmd_web_user(path, args) -> int:
    try:
        users_file = None if args.users_file else load_web(args.config)["web_users_file"]
        return webusers.command(args, users_file)
    except (webusers.UsersError, ConfigError) as exc:
        raise Failed(str(exc) if isinstance(exc, webusers.UsersError) else "; ".join(map(str, exc.issues))) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="horizonctl", description="Control a running horizond.")
    parser.add_argument("--socket", metavar="PATH", help="control socket (default: from the config)")
    parser.add_argument("--config", "-c", metavar="PATH", help="config file to read the socket path from")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help, json_flag=False, supervisor=None, fleet=False):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if fleet:
            p.add_argument("--fleet", action="store_true", help="on every live node of this Redis and prefix")
        if supervisor == "optional":
            p.add_argument("supervisor", nargs="?", help="one supervisor (default: all)")
        elif supervisor == "required":
            p.add_argument("supervisor")
        return p

    add("status", cmd_status, "state; exit 0 running, 1 paused, 2 not running", json_flag=True, fleet=True)
    add("nodes", cmd_nodes, "the fleet's live nodes", json_flag=True)
    add("supervisors", cmd_table, "supervisors table", json_flag=True)
    add("workers", cmd_table, "workers table: pid, state, job, age, RSS", json_flag=True, supervisor="optional")
    add("pause", cmd_pause, "stop starting jobs (in-flight jobs finish)", supervisor="optional", fleet=True)
    add("continue", cmd_pause, "start taking jobs again", supervisor="optional", fleet=True)
    scale = add("scale", cmd_scale, "pin a supervisor's process count, or 'auto' (--fleet: a fleet-wide total)",
                supervisor="required", fleet=True)
    scale.add_argument("processes", metavar="PROCESSES", help="a number, or 'auto'")
    add("restart", cmd_restart, "rolling graceful restart of workers", supervisor="optional", fleet=True)
    add("reload", cmd_reload, "re-read the config file (like SIGHUP) and say what changed")
    terminate = add("terminate", cmd_terminate, "graceful shutdown", fleet=True)
    terminate.add_argument("--wait", action="store_true", help="return once the daemon is gone")
    add("stats", cmd_stats, "throughput, failures, runtimes and waits per queue and job function", json_flag=True)
    add("queues", cmd_stats, "per queue: pending, processes, jobs/min, waits, time to clear", json_flag=True)
    trends = add("trends", cmd_trends, "a queue's metric snapshots over time (newest first)", json_flag=True)
    trends.add_argument("queue", metavar="QUEUE")
    trends.add_argument("--limit", type=int, default=60)
    add("health", cmd_health, "health verdict; exit 0 green, 1 yellow, 2 red", json_flag=True)
    batches = add("batches", cmd_batches, "RQ groups (batches) and their progress", json_flag=True)
    batches.add_argument("--limit", type=int, default=50)
    batch = add("batch", cmd_batches, "'batch show NAME': one batch's progress and its failed jobs", json_flag=True)
    batch.add_argument("action", choices=["show"])
    batch.add_argument("name", metavar="NAME")
    add("breakers", cmd_breakers, "circuit breakers: state, failures in the window, held queues", json_flag=True)
    breaker = add("breaker", cmd_breakers, "force a circuit breaker: 'breaker open|close NAME'")
    breaker.add_argument("action", choices=["open", "close"])
    breaker.add_argument("name", metavar="NAME")
    add("cron", cmd_cron, "[cron] entries and [maintenance]: schedule, next and last run (UTC)", json_flag=True)
    failed = add("failed", cmd_failed, "failed jobs, newest first; 'failed show ID' for one", json_flag=True)
    failed.add_argument("rest", nargs="*", metavar="show ID")
    failed.add_argument("--queue")
    failed.add_argument("--limit", type=int, default=50)
    retry = add("retry", cmd_retry, "requeue failed jobs: IDs, or 'all'")
    retry.add_argument("ids", nargs="+", metavar="ID|all")
    retry.add_argument("--queue", help="with 'all': only this queue")
    forget = add("forget", cmd_forget, "delete failed jobs")
    forget.add_argument("ids", nargs="+", metavar="ID")
    flush = add("flush", cmd_flush, "delete every failed job (of --queue)")
    flush.add_argument("--queue")
    prune = add("prune-failed", cmd_prune, "delete failed jobs older than --hours")
    prune.add_argument("--hours", type=float, required=True)
    prune.add_argument("--queue")
    clear = add("clear", cmd_clear, "delete a queue's pending jobs")
    clear.add_argument("queue", metavar="QUEUE")
    clear.add_argument("--yes", action="store_true", help="do not ask")
    webusers.add_parser(sub, cmd_web_user)
    config = add("config", cmd_config, "configuration")
    config.add_argument("action", choices=["show"], help="show: the effective config as TOML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(None if getattr(args, "local", False) else find_socket(args), args)
    except NotRunning as exc:
        print(f"horizonctl: {exc}", file=sys.stderr)
        if args.command == "status" and args.json:
            print(json.dumps({"state": "not running"}))
        return EXIT_NOT_RUNNING
    except Failed as exc:
        print(f"horizonctl: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError) as exc:
        print(f"horizonctl: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
