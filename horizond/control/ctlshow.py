"""horizonctl's read-only commands and their tables: status, supervisors, workers, nodes,
status --fleet, stats, queues, trends, breakers, cron, batches, health, config, slo."""

from __future__ import annotations

import json
import sys
import time

from horizond.control.ctlclient import EXIT_ERROR, EXIT_PAUSED, EXIT_RUNNING, NotRunning, call
from horizond.core import health


def print_status(status: dict) -> None:
    redis = status["redis"]
    print(f"horizond {status['state']} (pid {status['pid']}, up {status['uptime']:.0f}s, config {status['config']})")
    print(f"redis {redis['url']}: {'ok' if redis['ok'] else 'UNREACHABLE ' + str(redis['error'])}")
    print_supervisors(status["supervisors"])
    if status.get("rate_limits"):
        _print_rate_limits(status["rate_limits"], len(status["rate_limits"]))
    print_breakers(status.get("breakers") or [])
    if status.get("paused_queues"):
        print(f"queues paused by an operator (on every node): {', '.join(status['paused_queues'])}")
    for row in status.get("slo", ()):
        print(f"slo {row['queue']}: {row['state']}, {row['jobs']} jobs, p99 {_secs(row['p99'])} "
              f"(max {_secs(row['max_latency'])}), good {_pct(row['good_rate'])} of {_pct(row['objective'])}, "
              f"budget left {row['error_budget_remaining']:.0%}" + (f", {'/'.join(row['alerts'])} burn"
                                                                     if row["alerts"] else ""))
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


def _secs(value) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.4g}%"


def cmd_slo(path, args) -> int:
    """`horizonctl slo`: each queue's service level over its window; exit 1 burning, 2 violated."""
    result = call(path, "slo")
    rows = result["queues"]
    if args.json:
        print(json.dumps(result, indent=2))
    elif not result["configured"]:
        print("no [slo] levels in the config")
    else:
        print(f"{'QUEUE':<20} {'STATE':<9} {'JOBS':>6} {'P50':>7} {'P95':>7} {'P99':>7} {'MAX':>7} {'LIMIT':>6} "
              f"{'LATE':>6} {'SUCCESS':>8} {'GOOD/OBJ':>15} {'BUDGET':>7} {'BURN F/S':>11}  "
              "JOBS/MIN done/offered/target")
        for r in rows:
            lat, burn, tp = r["latency"], r["burn_rate"], r["throughput"]
            late = "-" if r["over_max_latency"] is None else f"{r['over_max_latency']:.1%}"
            good = f"{_pct(r['good_rate'])}/{_pct(r['objective']['success_rate'])}"
            offered = "?" if tp["offered"] is None else f"{tp['offered']:.1f}"
            print(f"{r['queue']:<20} {r['state']:<9} {r['jobs']:>6} {_secs(lat['p50']):>7} {_secs(lat['p95']):>7} "
                  f"{_secs(lat['p99']):>7} {_secs(lat['max']):>7} {_secs(r['objective']['max_latency']):>6} "
                  f"{late:>6} {_pct(r['success_rate']):>8} {good:>15} {r['error_budget_remaining']:>7.0%} "
                  f"{burn['fast']['long']:>5.1f}/{burn['slow']['long']:<5.1f}  "
                  f"{tp['achieved']:.1f}/{offered}/{tp['target']:g}")
    states = {r["state"] for r in rows}
    return 2 if "violated" in states else 1 if "burning" in states else 0
