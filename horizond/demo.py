"""Demo workload: job functions shaped like a real product, and an enqueuer for them.

Workers import the jobs as ``horizond.demo.<name>``. Run the enqueuer with
``python -m horizond.demo [--redis-url URL] [--rate JOBS_PER_SECOND] [--duration SECONDS]``.
Nothing here touches Redis or the terminal at import time.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
import uuid


def _work(low_ms: int, high_ms: int) -> int:
    ms = random.randint(low_ms, high_ms)
    time.sleep(ms / 1000)
    return ms


def call_ended_webhook(call_id: str) -> dict:
    """Queue webhooks-high: tell the customer's endpoint a call ended."""
    return {"call_id": call_id, "status": "delivered", "ms": _work(20, 80)}


def payment_webhook(payment_id: str, amount_cents: int) -> dict:
    """Queue webhooks: fails ~3% of the time, to show the supervisor's retries."""
    ms = _work(30, 100)
    if random.random() < 0.03:
        raise ConnectionError(f"payment provider timed out for {payment_id}")
    return {"payment_id": payment_id, "amount_cents": amount_cents, "status": "recorded", "ms": ms}


def send_summary_email(user_id: int) -> dict:
    """Queue emails: render and send a call summary."""
    return {"user_id": user_id, "status": "sent", "ms": _work(200, 600)}


def sync_calendar(account_id: int) -> dict:
    """Queue appointments: pull a calendar and reconcile appointments."""
    return {"account_id": account_id, "synced": random.randint(0, 12), "ms": _work(100, 400)}


def warm_cache(key: str) -> dict:
    """Queue cache: recompute one cached value."""
    return {"key": key, "status": "warmed", "ms": _work(10, 30)}


def mcp_tool_call(tool: str, args: dict) -> dict:
    """Queue mcp-high: an MCP tool call an agent is waiting on."""
    return {"tool": tool, "args": args, "ok": True, "ms": _work(20, 60)}


# (queue, job, weight, argument maker); weights sum to 100 and keep the slow
# queues (emails, appointments) within what their minimum workers can clear.
_TOOLS = ("calendar.find_slot", "crm.lookup_contact", "kb.search", "sms.send")
MIX = (
    ("webhooks-high", "call_ended_webhook", 25, lambda: (f"call_{uuid.uuid4().hex[:12]}",)),
    ("webhooks", "payment_webhook", 30,
     lambda: (f"pay_{uuid.uuid4().hex[:12]}", random.choice((999, 2500, 4900, 12000)))),
    ("mcp-high", "mcp_tool_call", 17, lambda: (random.choice(_TOOLS), {"query": f"q{random.randint(1, 999)}"})),
    ("cache", "warm_cache", 15, lambda: (f"user:{random.randint(1, 5000)}:profile",)),
    ("appointments", "sync_calendar", 8, lambda: (random.randint(1, 800),)),
    ("emails", "send_summary_email", 5, lambda: (random.randint(1, 5000),)),
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m horizond.demo", description="Enqueue a demo workload onto RQ.")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                        help="Redis URL (default: $REDIS_URL or redis://127.0.0.1:6379/0)")
    parser.add_argument("--rate", type=float, default=20.0, help="jobs per second, on average (default: 20)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl+C (default)")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be greater than 0")
    if args.duration < 0:
        parser.error("--duration must be 0 or more")
    return args


def _summary(queues: dict, counts: dict, total: int) -> str:
    lengths = " ".join(f"{name}={queue.count}" for name, queue in queues.items())
    sent = " ".join(f"{name}={counts[name]}" for name in queues)
    return f"[demo] enqueued {total} ({sent}) | waiting: {lengths}"


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from redis import Redis
    from redis.exceptions import RedisError
    from rq import Queue

    from horizond.core.config import redact_url

    args = _parse(argv)
    redis = Redis.from_url(args.redis_url)
    try:
        redis.ping()
    except RedisError as exc:
        print(f"[demo] cannot reach Redis at {redact_url(args.redis_url)}: {exc}", file=sys.stderr)
        return 1
    queues = {name: Queue(name, connection=redis) for name, *_ in MIX}
    counts = dict.fromkeys(queues, 0)
    weights = [weight for _, _, weight, _ in MIX]
    total = 0
    print(f"[demo] enqueuing ~{args.rate:g} jobs/s onto {', '.join(queues)} at {redact_url(args.redis_url)}",
          flush=True)
    signal.signal(signal.SIGTERM, _stop)  # a plain `kill` ends as cleanly as Ctrl+C
    start = time.monotonic()
    next_job = next_report = start
    try:
        while not args.duration or time.monotonic() - start < args.duration:
            now = time.monotonic()
            if now >= next_report:
                if total:
                    print(_summary(queues, counts, total), flush=True)
                next_report = now + 5
            if now < next_job:
                time.sleep(min(next_job - now, next_report - now, 0.5))
                continue
            name, func, _, make_args = random.choices(MIX, weights)[0]
            # No job_timeout / retry: the supervisor's timeout, tries and backoff apply.
            queues[name].enqueue(f"horizond.demo.{func}", *make_args())
            counts[name] += 1
            total += 1
            next_job += random.expovariate(args.rate)  # Poisson arrivals: bursty like real traffic
    except KeyboardInterrupt:
        pass
    except RedisError as exc:
        print(f"[demo] Redis error, stopping: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        print(_summary(queues, counts, total) + " | stopped", flush=True)
    except RedisError:
        print(f"[demo] enqueued {total} | stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
