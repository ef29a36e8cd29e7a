"""horizonctl's commands that change something: pause, continue, scale, restart, reload,
terminate (locally or --fleet), failed-job handling, clear, web-user."""

from __future__ import annotations

import json
import sys
import time

from horizond.configfile import load_web
from horizond.control import webusers
from horizond.control.ctlclient import Failed, NotRunning, call
from horizond.core.config import ConfigError

CONFIRM_WITHIN = 3.0  # a node that has not confirmed a fleet command by then is named


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


def cmd_queue(path, args) -> int:
    result = call(path, "queue_pause", queue=args.queue, paused=args.action == "pause")
    verb = "paused" if result["paused"] else "continued"
    print(f"queue {result['queue']} {verb} on every node (each master acts at its next sample, within 2 s)")
    return 0


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
        count = _walk(path, "retry", "retried", all=True, queue=args.queue,
                      **({"match": args.match} if args.match is not None else {}))
    elif args.queue or args.match is not None:
        raise Failed("retry: --queue and --match go with 'all' (retry all --queue Q --match TEXT)")
    else:
        count = len(call(path, "retry", ids=args.ids)["retried"])
    print(f"retried {count} job(s)")
    return 0


def cmd_forget(path, args) -> int:
    print(f"forgot {len(call(path, 'forget', ids=args.ids)['forgotten'])} job(s)")
    return 0


def cmd_flush(path, args) -> int:
    match = {"match": args.match} if args.match is not None else {}
    print(f"deleted {_walk(path, 'flush', 'deleted', queue=args.queue, **match)} failed job(s)")
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
