"""The read-only pages: Overview, Service levels, Recent jobs, Failed jobs, a job, Metrics, Workers,
Queues, bulk progress.

They read Redis directly in bounded windows (reads.py), except the service levels: those are the
command layer's `slo` command, asked as the signed-in user (viewers may read it), so the page
shows what `horizonctl slo` shows."""

from __future__ import annotations

import json
import time

import psutil
from flask import Blueprint, Flask, abort, current_app, g, jsonify, render_template, request

from horizond import sysutil
from horizond.control import failed, views
from horizond.web import actions, overview, reads

RANGES = {"1h": 3600, "24h": 86400}
SLO_COLORS = {"ok": "green", "burning": "yellow", "violated": "red"}  # "no data": grey (the seed's colours)
SLO_ORDER = {"violated": 0, "burning": 1, "ok": 2}  # the Overview lists the worst first ("no data" last)
OVERVIEW_LEVELS = 20  # rows of the Overview's Service levels panel; the page has them all


def _redis():
    return current_app.extensions["redis"]


def _config():
    return current_app.config["horizond"]


def levels() -> dict:
    """The `slo` command's reply for this user (its error, when the layer refused)."""
    reply = actions.ask(current_app.extensions["daemon"], g.me, "slo")
    return reply["result"] if reply["ok"] else {"configured": [], "queues": [], "error": reply["error"]}


def snapshot() -> dict:
    """The Overview's data and /api/snapshot: overview.snapshot plus the service levels."""
    return overview.snapshot(_redis(), _config(), slo=levels())


def _filter() -> reads.Filter:
    return reads.Filter(request.args.get("queue", "").strip(), request.args.get("q", "").strip())


def page_routes(bp: Blueprint) -> None:
    @bp.get("/", endpoint="overview")
    def overview_page():
        return render_template("overview.html", snap=snapshot(), page="overview")

    @bp.get("/slo")
    def service_levels():
        slo = levels()
        verdict = views.slo_indicator(slo["queues"]).level if slo["queues"] and "error" not in slo else None
        return render_template("slo.html", slo=slo, verdict=verdict, page="slo")

    @bp.get("/jobs")
    def recent_jobs():
        state = request.args.get("state", "completed")
        if state not in ("pending", "completed", "failed", "running"):
            abort(400, "state must be pending, completed, failed or running")
        flt, queues, now = _filter(), reads.queue_names(_redis()), time.time()
        if state == "pending":
            result = {"jobs": reads.pending(_redis(), flt, queues), "cursor": None, "scanned": 0}
        else:
            result = reads.jobs(_redis(), state, flt, reads.Cursor.decode(request.args.get("cursor")), queues)
            recent = reads.within_last_hour(result["jobs"], now)
            if len(recent) < len(result["jobs"]):  # reached the hour's end: no page after this one
                result.update(jobs=recent, cursor=None)
        _hide(result["jobs"])
        return render_template("jobs.html", page="recent", state=state, flt=flt, queues=queues, **result)

    @bp.get("/failed")
    def failed_jobs():
        flt, queues = _filter(), reads.queue_names(_redis())
        result = reads.jobs(_redis(), "failed", flt, reads.Cursor.decode(request.args.get("cursor")), queues)
        _hide(result["jobs"])
        return render_template("jobs.html", page="failed", state="failed", flt=flt, queues=queues, **result)

    @bp.get("/jobs/<job_id>")
    def job(job_id: str):
        return render_template("job.html", page="failed", job=_job_detail(job_id))

    @bp.get("/metrics")
    def metrics():
        queues = reads.queue_names(_redis())
        queue = request.args.get("queue") or (queues[0] if queues else "")
        span = request.args.get("range", "1h")
        if span not in RANGES or (queue and queue not in queues):
            abort(400, "unknown queue or range")
        count = max(1, RANGES[span] // _config().snapshot_interval)
        rows = reads.snapshots(_redis(), _config().redis_prefix, [queue], count).get(queue, []) if queue else []
        since = time.time() - RANGES[span]
        rows = [r for r in reversed(rows) if float(r.get("time", 0)) >= since]
        series = {k: [r.get(k) for r in rows] for k in ("jobs_per_minute", "recent_runtime", "estimated_wait",
                                                        "pending")}
        series["time"] = [float(r["time"]) for r in rows]
        return render_template("metrics.html", page="metrics", queues=queues, queue=queue, span=span, rows=rows,
                               series=json.dumps(series))

    @bp.get("/workers")
    def workers():
        offset = max(0, request.args.get("offset", 0, type=int))
        rows, total = reads.workers(_redis(), offset)
        here = sysutil.hostname()
        for row in rows:
            if row["pid"] and row["host"] == here:
                try:
                    row["rss"] = psutil.Process(row["pid"]).memory_info().rss
                except psutil.Error:
                    pass
        return render_template("workers.html", page="workers", rows=rows, total=total, offset=offset,
                               limit=reads.PAGE)

    @bp.get("/queues")
    def queues():
        snap = overview.snapshot(_redis(), _config())
        paused = {reads.text(q) for q in _redis().smembers(f"{_config().redis_prefix}:paused-queues")}
        return render_template("queues.html", page="queues", rows=snap["queues"], paused=paused)

    @bp.get("/queues/<name>/clear")
    def queue_clear_confirm(name: str):
        sizes, _ = reads.queue_depths(_redis(), [name])
        return render_template("confirm.html", page="queues", queue=name, pending=sizes.get(name, 0))

    @bp.get("/bulk/<bulk_id>")
    def bulk(bulk_id: str):
        status = actions.bulk_status(_redis(), _config().redis_prefix, bulk_id)
        if status is None:
            abort(404, "no such bulk action (they are kept a day)")
        if request.args.get("format") == "json":
            return jsonify(status)
        return render_template("bulk.html", page="failed", bulk=status)


def _hide(rows: list[dict]) -> None:
    """Viewers see an exception's class, never its message (it may quote the arguments)."""
    if not g.me.admin:
        for row in rows:
            row["exception"] = reads.exception_class(row["exception"]) if row.get("exception") else ""


def _job_detail(job_id: str) -> dict:
    redis = _redis()
    values = dict(zip(reads.JOB_FIELDS, redis.hmget(f"rq:job:{job_id}", *reads.JOB_FIELDS), strict=True))
    if not any(values.values()):
        abort(404, f"no job {job_id!r} (it may have expired)")
    queue = reads.text(values["origin"])
    traceback = reads.exception_of(redis.xrevrange(f"rq:results:{job_id}", "+", "-", count=1))
    detail = {"id": job_id, "queue": queue, "func": reads.text(values["description"]).partition("(")[0],
              "status": reads.text(values["status"]), "enqueued_at": reads.stamp(values["enqueued_at"]),
              "started_at": reads.stamp(values["started_at"]), "ended_at": reads.stamp(values["ended_at"]),
              "worker": reads.text(values["worker_name"]), "exception": reads.last_line(traceback),
              "failed": redis.zscore(f"rq:failed:{queue}", job_id) is not None}
    if not g.me.admin:
        detail["exception"] = reads.exception_class(detail["exception"]) if detail["exception"] else ""
        return detail
    detail["traceback"] = traceback
    try:
        if detail["failed"]:
            shown = failed.show(redis, (queue,), job_id)
            detail.update(args=shown["args"], kwargs=shown["kwargs"], description=shown["description"])
        else:
            detail["description"] = reads.text(values["description"])[:failed.SHOWN]
    except Exception as exc:  # the job's code is not importable here, or it changed meanwhile
        detail["args"] = f"[cannot unpack here: {type(exc).__name__}: {exc}]"
    return detail


def add_filters(app: Flask) -> None:
    app.jinja_env.filters["ago"] = lambda ts: "" if not ts else duration(time.time() - float(ts)) + " ago"
    app.jinja_env.filters["dur"] = lambda s: "–" if s is None else duration(float(s))
    app.jinja_env.filters["mb"] = lambda b: "–" if not b else f"{b / 1048576:.0f} MB"
    app.jinja_env.filters["g4"] = lambda v: "–" if v is None else f"{float(v):.4g}"
    app.jinja_env.filters["g3"] = lambda v: "–" if v is None else f"{float(v):.3g}"
    app.jinja_env.filters["percent"] = lambda v: "–" if v is None else f"{float(v):.4g} %"  # already in percent
    app.jinja_env.filters["share"] = lambda v: "–" if v is None else f"{100 * float(v):.4g} %"  # a fraction
    app.jinja_env.filters["slo_color"] = lambda state: SLO_COLORS.get(state, "none")
    app.jinja_env.filters["worst"] = lambda rows: sorted(rows, key=lambda r: SLO_ORDER.get(r["state"], 3))[
        :OVERVIEW_LEVELS]
    app.jinja_env.globals["now"] = time.time


def duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "∞"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
