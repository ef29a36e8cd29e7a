"""Prometheus /metrics and /healthz, served from the master loop's selector.

No thread: the collector reads the master's state in the loop that owns it,
so a scrape never races a worker report, and nothing extra lives across fork().
A thin transport over the command layer: /metrics is the read-level command
"metrics", /healthz is "health" (the same verdict `horizonctl health` gives).
Requests are tiny and bounded (8 KiB, 5 s, 16 at once); anything else gets 404.
With all 16 slots taken, the client that has waited longest for its request is
dropped for the newcomer: a slowloris on /metrics does not starve /healthz probes.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from horizond.control.loopserver import BACKLOG, LoopServer, ThrottledLog
from horizond.core import health
from horizond.core.breakers import LEVEL
from horizond.observe.metrics import BUCKETS

log = logging.getLogger("horizond.exporter")

MAX_REQUEST = 8192
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 16
MAX_REPLY = 4 * 1024 * 1024


Handler = Callable[[dict, str], dict]  # CommandLayer.handle: (request, access) -> reply


def ask(handle: Handler, cmd: str) -> dict:
    """A read-level command's result; its error (there should be none) as an exception."""
    reply = handle({"cmd": cmd}, "read")
    if not reply["ok"]:
        raise RuntimeError(f"{cmd}: {reply['error']}")
    return reply["result"]


class _Collector:
    def __init__(self, handle: Handler):
        self.handle = handle

    def collect(self):
        v = ask(self.handle, "metrics")
        processed = CounterMetricFamily("horizon_jobs_processed", "Jobs run to an end", labels=["queue", "supervisor"])
        failed = CounterMetricFamily("horizon_jobs_failed", "Job runs that failed", labels=["queue", "supervisor"])
        duration = HistogramMetricFamily("horizon_job_duration_seconds", "Job runtime", labels=["queue"])
        wait = GaugeMetricFamily("horizon_queue_wait_seconds", "Recent wait from enqueue to start", labels=["queue"])
        for queue, tally in v["queues"].items():
            processed.add_metric([queue, tally["supervisor"]], tally["processed"])
            failed.add_metric([queue, tally["supervisor"]], tally["failed"])
            buckets = [(str(edge), count) for edge, count in zip(BUCKETS, tally["buckets"], strict=True)]
            duration.add_metric([queue], buckets + [("+Inf", tally["runtime_count"])], tally["runtime_sum"])
            if tally["recent_wait"] is not None:
                wait.add_metric([queue], tally["recent_wait"])
        size = GaugeMetricFamily("horizon_queue_size", "Jobs waiting", labels=["queue"])
        for queue, pending in v["pending"].items():
            size.add_metric([queue], pending)
        workers = GaugeMetricFamily("horizon_worker_count", "Worker processes", labels=["supervisor", "state"])
        for row in v["workers"]:
            workers.add_metric([row["supervisor"], row["state"]], row["count"])
        memory = GaugeMetricFamily("horizon_memory_usage_bytes", "RSS of a supervisor's workers",
                                   labels=["supervisor"])
        for sup, rss in v["memory"].items():
            memory.add_metric([sup], rss)
        waits = CounterMetricFamily("horizon_long_waits", "Long-wait notifications", labels=["queue"])
        for queue, n in v["long_waits"].items():
            waits.add_metric([queue], n)
        limits = [GaugeMetricFamily(f"horizon_rate_limit_{name}", text, labels=["key"]) for name, text in (
            ("concurrency", "RQ rate limit: jobs allowed queued or running at once"),
            ("slots_used", "RQ rate limit: jobs queued or running under the limit"),
            ("waiting", "RQ rate limit: jobs waiting as rate_limited"))]
        for row in v["rate_limits"]:
            for family, field in zip(limits, ("concurrency", "slots_used", "waiting"), strict=True):
                family.add_metric([row["key"]], row[field])
        rates = [GaugeMetricFamily(f"horizon_limit_rate_{name}", text, labels=["limit"]) for name, text in (
            ("allowed", "[limits] rate: jobs allowed to start per window"),
            ("started", "[limits] rate: jobs started in the current window"))]
        for row in v.get("start_rates", ()):
            rates[0].add_metric([row["pattern"]], row["allowed"])
            rates[1].add_metric([row["pattern"]], row["started"])
        breaker_state = GaugeMetricFamily("horizon_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                          labels=["breaker"])
        breaker_failures = GaugeMetricFamily("horizon_breaker_failures",
                                             "Circuit breaker: counted failures in its window", labels=["breaker"])
        for row in v.get("breakers", ()):
            breaker_state.add_metric([row["name"]], LEVEL.get(row.get("state"), 0))
            breaker_failures.add_metric([row["name"]], row.get("failures") or 0)
        yield from (processed, failed, duration, wait, size, workers, memory, waits, *limits, *rates, breaker_state,
                    breaker_failures)
        if v.get("slo"):
            yield from _slo_families(v["slo"])


def _slo_families(rows: list[dict]):
    """[slo]: each queue's level over its window, fleet-wide (README "Service levels")."""
    latency = GaugeMetricFamily("horizon_slo_latency_seconds", "Enqueue-to-finish latency over the SLO window "
                                "(quantile 1: the maximum), within the sketch's bucket error",
                                labels=["queue", "quantile"])
    success = GaugeMetricFamily("horizon_slo_success_ratio", "Jobs that succeeded, of those finished in the window",
                                labels=["queue"])
    good = GaugeMetricFamily("horizon_slo_good_ratio", "Jobs that succeeded within max_latency, of those finished "
                             "in the window", labels=["queue"])
    budget = GaugeMetricFamily("horizon_slo_error_budget_remaining", "Share of the window's error budget left "
                               "(below 0: the level is missed)", labels=["queue"])
    burn = GaugeMetricFamily("horizon_slo_burn_rate", "Error budget burn rate (1: used up exactly at the window's "
                             "end) over an alert's long window", labels=["queue", "window"])
    objective = GaugeMetricFamily("horizon_slo_objective_ratio", "The success_rate the level promises",
                                  labels=["queue"])
    for row in rows:
        queue = row["queue"]
        for name, q in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"), ("max", "1")):
            if row["latency"][name] is not None:
                latency.add_metric([queue, q], row["latency"][name])
        if row["success_rate"] is not None:
            success.add_metric([queue], row["success_rate"] / 100)
            good.add_metric([queue], row["good_rate"] / 100)
        budget.add_metric([queue], row["error_budget_remaining"])
        for name, rates in row["burn_rate"].items():
            burn.add_metric([queue, name], rates["long"])
        objective.add_metric([queue], row["objective"]["success_rate"] / 100)
    return latency, success, good, budget, burn, objective


class MetricsServer(LoopServer):
    max_clients = MAX_CLIENTS
    client_timeout = CLIENT_TIMEOUT
    max_reply = MAX_REPLY

    def __init__(self, listen: str, selector: selectors.BaseSelector, handle: Handler):
        super().__init__(selector)
        host, _, port = listen.rpartition(":")
        self.address = (host.strip("[]") or "127.0.0.1", int(port))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(handle))
        self.handle = handle
        self._log = ThrottledLog(log, logging.ERROR)

    def open(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.address)
        sock.listen(BACKLOG)
        self.listen(sock)

    def reply(self, request: bytes, context: object, ended: bool) -> bytes | None:
        if b"\r\n\r\n" not in request and b"\n\n" not in request:
            return b"" if ended or len(request) >= MAX_REQUEST else None
        parts = request.split(b" ", 2)
        method, path = (parts[0], parts[1].split(b"?")[0]) if len(parts) == 3 else (b"", b"")
        if method != b"GET":
            status, body, kind = 405, b"method not allowed\n", "text/plain"
        elif path == b"/metrics":
            status, body, kind = 200, generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"
        elif path == b"/healthz":
            verdict = ask(self.handle, "health")
            status = 503 if verdict["status"] == health.RED else 200
            body, kind = json.dumps(verdict).encode(), "application/json"
        else:
            status, body, kind = 404, b"not found: try /metrics or /healthz\n", "text/plain"
        return _response(status, body, kind)

    def failed_reply(self, request: bytes, context: object, exc: Exception) -> bytes:
        path = request.split(b" ", 2)[1][:64].decode(errors="replace") if request.count(b" ") >= 2 else None
        self._log("error", f"{path} failed", {"event": "metrics_error", "path": path}, exc_info=exc)
        return _response(500, f"internal error: {type(exc).__name__}\n".encode(), "text/plain")

    def too_large(self, size: int, context: object) -> bytes:
        return _response(500, f"reply too large: {size} bytes (limit {MAX_REPLY})\n".encode(), "text/plain")

    def housekeeping(self, now: float, closing: bool = False) -> None:
        self._log.flush(now, force=closing)


def _response(status: int, body: bytes, kind: str) -> bytes:
    reason = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable", 404: "Not Found",
              405: "Method Not Allowed"}[status]
    head = f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n" \
           "Connection: close\r\n\r\n"
    return head.encode() + body
