"""The dashboard's routes (Flask): pages rendered on the server, one JSON snapshot for live updates.

Every page works without JavaScript; static/app.js only refreshes the Overview and the
Service levels page from GET {base}/api/snapshot every 2 s (one request at a time, paused
while the tab is hidden) and draws the Metrics charts with the vendored uPlot. Every POST
needs the CSRF token of the session (auth.py) and is a request to the command layer
(actions.py) with the user's access: "full" for an admin, "read" for a viewer, whom the
layer refuses (403) as it refuses a read-only socket client. Viewers never receive job
arguments, results, descriptions (RQ writes the arguments into them) or tracebacks: only
the exception's class.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, abort, g, jsonify, make_response, redirect, render_template, request, url_for
from redis import Redis
from redis.exceptions import RedisError

from horizond.core.config import Config
from horizond.web import actions, auth, overview, pages, reads
from horizond.web.daemon import WebDaemon

COOKIE, PRE_COOKIE = "hz_session", "hz_login"
PUBLIC = {"web.login", "web.login_post", "static"}
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
           "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store"}


def create_app(config: Config, redis: Redis) -> Flask:
    base = config.web_base_path
    app = Flask(__name__, static_url_path=f"{base}/static")
    app.config["horizond"] = config
    app.extensions["redis"] = redis
    app.extensions["auth"] = auth.Auth(config, redis)
    app.extensions["daemon"] = WebDaemon(config, redis)  # under the command layer every action goes through
    pages.add_filters(app)
    bp = Blueprint("web", __name__)
    _auth_routes(bp)
    pages.page_routes(bp)
    _action_routes(bp)
    app.register_blueprint(bp, url_prefix=base or None)
    if base:
        app.add_url_rule("/", "root", lambda: redirect(f"{base}/"))
    app.before_request(_who)
    app.after_request(_headers)
    app.register_error_handler(RedisError, _redis_down)
    return app


def _who():
    """Identify the caller; no page without an identity, no POST without admin and CSRF."""
    if request.endpoint in PUBLIC or request.endpoint is None:
        return None
    a: auth.Auth = _ext("auth")
    config: Config = _ext("config")
    header = config.web_proxy_user_header
    g.me = a.identify(request.cookies.get(COOKIE), request.remote_addr, request.headers.get(header) if header else None)
    if g.me is None:
        if request.path.startswith(f"{config.web_base_path}/api/"):
            return jsonify({"error": "log in first"}), 401
        return redirect(url_for("web.login", next=request.full_path))
    if request.method == "POST" and request.endpoint != "web.logout":
        if not a.check_csrf(g.me, request.form.get("csrf") or request.headers.get("X-CSRF-Token")):
            abort(403, "missing or wrong CSRF token: reload the page and try again")
    return None  # who may do what: the command layer decides (actions.run)


def _headers(response):
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def _redis_down(exc: RedisError):
    return render_template("error.html", message=f"Redis is not answering: {type(exc).__name__}: {exc}"), 503


def _ext(name: str):
    from flask import current_app

    return current_app.config["horizond"] if name == "config" else current_app.extensions[name]


def _auth_routes(bp: Blueprint) -> None:
    @bp.get("/login")
    def login(error: str | None = None, status: int = 200):
        import secrets

        nonce = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(16)
        response = make_response(render_template(
            "login.html", error=error, token=_ext("auth").login_token(nonce), nxt=request.values.get("next", ""),
            no_users=not _ext("auth").users()), status)
        response.set_cookie(PRE_COOKIE, nonce, httponly=True, samesite="Strict", secure=request.is_secure,
                            path=_ext("config").web_base_path or "/")
        return response

    @bp.post("/login")
    def login_post():
        a: auth.Auth = _ext("auth")
        nonce = request.cookies.get(PRE_COOKIE)
        if not nonce or not a.check_csrf(auth.Identity("", "", a.login_token(nonce), ""), request.form.get("csrf")):
            abort(403, "missing or wrong CSRF token: reload the login page and try again")
        try:
            token = a.login(request.form.get("name", ""), request.form.get("password", ""), request.remote_addr)
        except auth.RateLimited as exc:
            response = login(str(exc), 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if token is None:
            return login("wrong name or password", 401)
        nxt = request.form.get("next", "")
        base = _ext("config").web_base_path
        target = nxt if nxt.startswith(f"{base}/") and not nxt.startswith("//") else url_for("web.overview")
        response = redirect(target, 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure,
                            max_age=auth.SESSION_TTL, path=base or "/")
        return response

    @bp.post("/logout")
    def logout():
        _ext("auth").logout(request.cookies.get(COOKIE))
        response = redirect(url_for("web.login"), 303)
        response.delete_cookie(COOKIE, path=_ext("config").web_base_path or "/")
        return response

    @bp.get("/api/snapshot")
    def api_snapshot():
        try:
            return jsonify(pages.snapshot())
        except RedisError as exc:
            return jsonify({"time": time.time(), "health": overview.unreachable(exc)}), 503


def _action_routes(bp: Blueprint) -> None:
    """Each route: parse the form, ask the command layer as the signed-in user, render its reply."""

    @bp.post("/jobs/<job_id>/retry")
    def job_retry(job_id: str):
        return _act("retry", {"ids": [job_id]}, url_for("web.failed_jobs"), lambda r: f"requeued {job_id}")

    @bp.post("/jobs/<job_id>/delete")
    def job_delete(job_id: str):
        return _act("forget", {"ids": [job_id]}, url_for("web.failed_jobs"), lambda r: f"deleted {job_id}")

    @bp.post("/failed/bulk")
    def failed_bulk():
        flt = reads.Filter(request.form.get("queue", ""), request.form.get("q", "").strip())
        try:
            bulk_id = actions.start_bulk(_ext("daemon"), g.me, _ext("config").redis_prefix,
                                         request.form.get("action", ""), flt)
        except actions.ActionError as exc:
            return _refused(exc)
        return redirect(url_for("web.bulk", bulk_id=bulk_id), 303)

    @bp.post("/supervisors/<name>/<action>")
    def supervisor_action(name: str, action: str):
        if action not in actions.SUPERVISOR_ACTIONS:
            abort(404)
        return _act("fleet", actions.supervisor_args(action, name, request.form.get("processes")),
                    url_for("web.overview"),
                    lambda sent: f"{action} {name}: sent to every node ({', '.join(sent['nodes']) or 'none live'}); "
                                 f"each applies it within a second")

    @bp.post("/queues/<name>/<action>")
    def queue_pause(name: str, action: str):
        if action not in ("pause", "continue"):
            abort(404)
        return _act("queue_pause", {"queue": name, "paused": action == "pause"}, url_for("web.queues"),
                    lambda r: f"{action} {name}: on every node within 2 s (each master's next sample)")

    @bp.post("/queues/<name>/clear")
    def queue_clear(name: str):
        if request.form.get("confirm") != name:
            abort(400, f"type the queue's name ({name}) to confirm")
        return _act("clear", {"queue": name}, url_for("web.queues"),
                    lambda r: f"cleared {name}: {r['deleted']} pending jobs deleted")


def _act(cmd: str, args: dict, back: str, say):
    try:
        result = actions.run(_ext("daemon"), g.me, cmd, **args)
    except actions.ActionError as exc:
        return _refused(exc)
    return render_template("done.html", message=say(result), back=back)


def _refused(exc: actions.ActionError):
    return render_template("error.html", message=str(exc)), exc.status
