"""`horizonctl`: talk to a running horizond over its control socket.

Every command exits 0 on success and non-zero with a one-line error on stderr
otherwise; `status` follows Horizon's codes (0 running, 1 paused, 2 not running).
The client is ctlclient.py; the commands are ctlshow.py (read) and ctlact.py (act).
"""

from __future__ import annotations

import argparse
import json
import sys

from horizond.control import webusers
from horizond.control.ctlact import (
    cmd_clear,
    cmd_failed,
    cmd_flush,
    cmd_forget,
    cmd_pause,
    cmd_prune,
    cmd_queue,
    cmd_reload,
    cmd_restart,
    cmd_retry,
    cmd_scale,
    cmd_terminate,
    cmd_web_user,
)
from horizond.control.ctlclient import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_PAUSED,
    EXIT_RUNNING,
    Endpoint,
    Failed,
    NotRunning,
    call,
    find_socket,
    request,
)
from horizond.control.ctlshow import (
    cmd_batches,
    cmd_breakers,
    cmd_config,
    cmd_cron,
    cmd_health,
    cmd_nodes,
    cmd_slo,
    cmd_stats,
    cmd_status,
    cmd_table,
    cmd_trends,
)

__all__ = ["EXIT_ERROR", "EXIT_NOT_RUNNING", "EXIT_PAUSED", "EXIT_RUNNING", "Endpoint", "Failed", "NotRunning", "call",
           "find_socket", "request", "build_parser", "main"]


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
    add("slo", cmd_slo, "service levels per queue: latency percentiles, success, error budget, burn; "
        "exit 0 ok, 1 burning, 2 violated", json_flag=True)
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
    retry.add_argument("--match", metavar="TEXT", help="with 'all': only jobs whose id, function or exception "
                       "line holds TEXT (any case; as the dashboard's failed-jobs search)")
    forget = add("forget", cmd_forget, "delete failed jobs")
    forget.add_argument("ids", nargs="+", metavar="ID")
    flush = add("flush", cmd_flush, "delete every failed job (of --queue, holding --match TEXT)")
    flush.add_argument("--queue")
    flush.add_argument("--match", metavar="TEXT", help="only jobs whose id, function or exception line holds TEXT "
                       "(any case; as the dashboard's failed-jobs search)")
    prune = add("prune-failed", cmd_prune, "delete failed jobs older than --hours")
    prune.add_argument("--hours", type=float, required=True)
    prune.add_argument("--queue")
    queue = add("queue", cmd_queue, "'queue pause|continue QUEUE': hold one queue on every node, or let it go")
    queue.add_argument("action", choices=["pause", "continue"])
    queue.add_argument("queue", metavar="QUEUE")
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
