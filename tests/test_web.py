"""The dashboard over HTTP (Flask's client on the real app and a real Redis): who may see and do what."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from rq import Queue

pytest.importorskip("flask")

from conftest import ROOT, child_env, wait_until  # noqa: E402
from horizond.configfile import load  # noqa: E402
from horizond.control import webusers  # noqa: E402
from horizond.core.config import ConfigError, parse  # noqa: E402
from horizond.web import auth, overview  # noqa: E402
from horizond.web.app import create_app  # noqa: E402
from webfixtures import PASSWORDS, fail_jobs, record_levels, write_config  # noqa: E402


@pytest.fixture
def app(tmp_path, redis_url, redis):
    config = load(str(write_config(tmp_path, redis_url)))
    return create_app(config, redis)


def csrf_of(html: bytes) -> str:
    return re.search(rb'name="csrf" value="([^"]+)"', html)[1].decode()


def login(client, name: str, password: str | None = None, remote: str = "127.0.0.1"):
    page = client.get("/horizon/login")
    return client.post("/horizon/login", data={"csrf": csrf_of(page.data), "name": name,
                                               "password": password or PASSWORDS[name]},
                       environ_base={"REMOTE_ADDR": remote})


def test_pages_need_a_login_and_the_session_cookie_is_httponly_and_strict(app):
    client = app.test_client()
    assert client.get("/horizon/failed").status_code == 302
    assert client.get("/horizon/api/snapshot").status_code == 401
    response = login(client, "admin")
    assert response.status_code == 303
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("hz_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for page in ("/", "/jobs", "/jobs?state=pending", "/failed", "/metrics", "/workers", "/queues", "/api/snapshot"):
        assert client.get(f"/horizon{page}").status_code == 200, page


def test_wrong_password_is_refused(app):
    client = app.test_client()
    assert login(client, "admin", "not-the-password").status_code == 401
    assert client.get("/horizon/failed").status_code == 302


def test_failed_logins_are_rate_limited_even_with_the_right_password_then(app):
    client = app.test_client()
    for _ in range(auth.FAIL_LIMIT_USER):
        assert login(client, "admin", "wrong-password").status_code == 401
    limited = login(client, "admin")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert login(client, "viewer").status_code == 303  # another user is not locked out


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(app, redis):
    [job_id] = fail_jobs(redis, "emails", ["x"])
    client = app.test_client()
    login(client, "admin")
    assert client.post(f"/horizon/jobs/{job_id}/retry").status_code == 403
    assert client.post(f"/horizon/jobs/{job_id}/retry", data={"csrf": "forged"}).status_code == 403
    assert redis.zscore("rq:failed:emails", job_id) is not None
    token = csrf_of(client.get("/horizon/failed").data)
    assert client.post(f"/horizon/jobs/{job_id}/retry", data={"csrf": token}).status_code == 200
    assert redis.zscore("rq:failed:emails", job_id) is None and redis.lrange("rq:queue:emails", 0, -1) == [
        job_id.encode()]


def test_a_login_post_without_its_token_is_refused(app):
    client = app.test_client()
    assert client.post("/horizon/login", data={"name": "admin", "password": PASSWORDS["admin"]}).status_code == 403


def test_viewers_see_no_arguments_messages_or_tracebacks_and_cannot_act(app, redis):
    [job_id] = fail_jobs(redis, "emails", ["card-4242"])
    client = app.test_client()
    login(client, "viewer")
    for page in (f"/horizon/jobs/{job_id}", "/horizon/failed", "/horizon/jobs?state=failed"):
        html = client.get(page).data
        assert b"RuntimeError" in html and b"card-4242" not in html, page
        assert b"Traceback" not in html
    token = csrf_of(client.get("/horizon/").data)  # the logout form's token
    assert client.post(f"/horizon/jobs/{job_id}/delete", data={"csrf": token}).status_code == 403
    assert redis.zscore("rq:failed:emails", job_id) is not None
    admin = app.test_client()
    login(admin, "admin")
    assert b"card-4242" in admin.get(f"/horizon/jobs/{job_id}").data


def test_removing_a_user_ends_their_session(app):
    client = app.test_client()
    login(client, "viewer")
    assert client.get("/horizon/failed").status_code == 200
    webusers.remove(app.config["horizond"].web_users_file, "viewer")
    assert client.get("/horizon/failed").status_code == 302


def test_the_proxy_header_is_honoured_only_from_the_loopback(tmp_path, redis_url, redis):
    config = load(str(write_config(tmp_path, redis_url, extra='proxy_user_header = "X-Remote-User"\n')))
    client = create_app(config, redis).test_client()
    assert client.get("/horizon/failed", headers={"X-Remote-User": "admin"}).status_code == 200
    far = client.get("/horizon/failed", headers={"X-Remote-User": "admin"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert far.status_code == 302  # to the login page: the header from elsewhere counts for nothing


def test_clearing_a_queue_needs_its_name_typed(app, redis):
    from rq import Queue

    Queue("bulk", connection=redis).enqueue("testjobs.record", "x")
    client = app.test_client()
    login(client, "admin")
    token = csrf_of(client.get("/horizon/queues/bulk/clear").data)
    assert client.post("/horizon/queues/bulk/clear", data={"csrf": token, "confirm": "nope"}).status_code == 400
    assert redis.llen("rq:queue:bulk") == 1
    assert client.post("/horizon/queues/bulk/clear", data={"csrf": token, "confirm": "bulk"}).status_code == 200
    assert redis.llen("rq:queue:bulk") == 0


def test_failed_search_matches_function_exception_text_and_queue(app, redis):
    fail_jobs(redis, "emails", ["alpha-1", "beta-2"])
    fail_jobs(redis, "sms", ["alpha-3"])
    client = app.test_client()
    login(client, "admin")
    html = client.get("/horizon/failed?q=alpha").data
    assert b"alpha-1" in html and b"alpha-3" in html and b"beta-2" not in html
    html = client.get("/horizon/failed?q=alpha&queue=sms").data
    assert b"alpha-3" in html and b"alpha-1" not in html


def test_failed_pages_walk_every_job_once_across_queues(app, redis):
    ids = set(fail_jobs(redis, "emails", [f"e{i}" for i in range(70)]) + fail_jobs(redis, "sms", ["s1", "s2"]))
    client = app.test_client()
    login(client, "admin")
    seen, url = [], "/horizon/failed"
    while url:
        html = client.get(url).data.decode()
        seen += re.findall(r'href="/horizon/jobs/([^"]+)"', html)
        nxt = re.search(r'id="older" href="([^"]+)"', html)
        url = nxt[1].replace("&amp;", "&") if nxt else None
    assert sorted(seen) == sorted(ids)


def test_overview_snapshot_reads_without_the_fleet(redis, tmp_path, redis_url):
    config = load(str(write_config(tmp_path, redis_url)))
    fail_jobs(redis, "emails", ["a"])
    snap = overview.snapshot(redis, config)
    assert snap["nodes"] == [] and snap["headline"]["failed_kept"] == 1
    assert {r["queue"] for r in snap["queues"]} == {"emails"} and snap["health"]["status"] == "green"


def test_config_refuses_an_open_dashboard_off_the_loopback():
    with pytest.raises(ConfigError) as caught:
        parse('[supervisors.a]\n[web]\nlisten = "0.0.0.0:8750"\n', "f.toml")
    [issue] = caught.value.issues
    assert (issue.table, issue.key) == ("web", "listen") and "users_file" in issue.message
    assert parse('[supervisors.a]\n[web]\nlisten = "0.0.0.0:8750"\nusers_file = "/u"\n', "f").web_listen
    for bad, key in (('listen = "nope"', "listen"), ('base_path = "x"', "base_path"),
                     ('proxy_user_header = "X User"', "proxy_user_header"), ("lisen = 1", "lisen")):
        with pytest.raises(ConfigError) as caught:
            parse(f"[supervisors.a]\n[web]\n{bad}\n", "f.toml")
        assert [i.key for i in caught.value.issues] == [key]


def test_web_user_cli_writes_scrypt_hashes_mode_0600(tmp_path):
    users = tmp_path / "users"

    def ctl(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "horizond.control.ctl", "web-user", *args, "--users-file",
                               str(users)], input=stdin, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    assert ctl("add", "ann", "--role", "admin", stdin="long-enough-pw\n").returncode == 0
    assert os.stat(users).st_mode & 0o777 == 0o600
    line = users.read_text()
    assert line.startswith("ann:admin:scrypt$") and "long-enough-pw" not in line
    assert webusers.verify("long-enough-pw", webusers.load(str(users))["ann"].hash)
    assert ctl("add", "bob", stdin="short\n").returncode != 0
    assert ctl("list").stdout.split() == ["ann", "admin"]
    assert ctl("remove", "ann").returncode == 0 and ctl("list").stdout == ""
    failed = ctl("remove", "ann")
    assert failed.returncode != 0 and "no user 'ann'" in failed.stderr


def test_horizond_web_refuses_to_start_without_listen(tmp_path, redis_url):
    config = tmp_path / "h.toml"
    config.write_text(f'[redis]\nurl = "{redis_url}"\n[supervisors.a]\n')
    result = subprocess.run([sys.executable, "-m", "horizond", "web", "--config", str(config)], capture_output=True,
                            text=True, env=child_env(), cwd=ROOT, timeout=30)
    assert result.returncode == 2 and "[web] listen is not set" in result.stderr




def _dashboard_pid(port: int):
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    return None


def test_the_master_runs_the_dashboard_as_a_child_and_restarts_it(start_daemon):
    import signal
    import urllib.request

    import psutil

    from conftest import free_port, wait_until

    port = free_port()
    daemon = start_daemon(f'[supervisors.a]\nqueues = ["default"]\n[web]\nlisten = "127.0.0.1:{port}"\n')

    def answering():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/horizon/", timeout=2).status == 200
        except OSError:
            return False
    wait_until(answering, 20, what="the dashboard to answer")
    first = wait_until(lambda: _dashboard_pid(port), what="the dashboard's pid")
    assert psutil.Process(first).ppid() == daemon.proc.pid  # the master's own child, not a thread
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: (pid := _dashboard_pid(port)) and pid != first and answering(), 20,
               what="a new dashboard process")
    assert any(e.get("event") == "helper_exited" for e in daemon.log_events())
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    wait_until(lambda: not answering(), 10, what="the dashboard to stop with the master")


def test_merged_windows_page_through_many_queues_and_equal_scores_exactly_once(redis):
    from horizond.web import reads

    keys = {f"q{i:02d}": f"rq:failed:q{i:02d}" for i in range(40)}
    expected = set()
    for i, key in enumerate(keys.values()):
        for n in range(i % 5):  # uneven: some queues empty, many entries sharing a score
            redis.zadd(key, {f"job-{i}-{n}": 1000 + n % 2})
            expected.add(f"job-{i}-{n}")
    seen, cursor = [], reads.Cursor()
    while cursor is not None:
        page, cursor = reads.window(redis, keys, cursor, 7)
        seen += [job_id for _, _, job_id in page]
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    scores = [redis.zscore(f"rq:failed:q{int(job_id.split('-')[1]):02d}", job_id) for job_id in seen]
    assert scores == sorted(scores, reverse=True)  # newest first across every queue


def test_overview_shows_breakers_and_limits_without_moving_them(redis, tmp_path, redis_url):
    extra = ('[breakers.partner]\nqueues = ["partner*"]\nfailures = 3\ncooldown = 1\n'
             '[limits."partner*"]\nconcurrency = 2\nrate = [5, 60]\n')
    config = load(str(write_config(tmp_path, redis_url, extra=extra)))
    redis.hset("horizond:breaker:partner", mapping={"state": "open", "until": 0, "opened_at": 1})
    redis.zadd("horizond:limit:partner*:starts", {"a": time.time()})
    redis.sadd("rq:rl-keys", "horizond:partner*")
    redis.hset("rq:rl:horizond:partner*", "concurrency", 2)
    redis.zadd("rq:rl:horizond:partner*:allowed", {"j1": 1})
    snap = overview.snapshot(redis, config)
    assert [(b["name"], b["state"], b["threshold"]) for b in snap["breakers"]] == [("partner", "open", 3)]
    assert redis.hget("horizond:breaker:partner", "state") == b"open"  # past its cooldown, yet not moved on
    assert redis.hget("horizond:breaker:partner", "notified") is None  # nor announced: the masters do that
    assert snap["limits"]["rates"] == [{"pattern": "partner*", "allowed": 5, "per_seconds": 60.0, "started": 1}]
    assert snap["limits"]["concurrency"][0] | {"key": "horizond:partner*", "concurrency": 2, "slots_used": 1} \
        == snap["limits"]["concurrency"][0]


def test_an_admin_pauses_and_continues_a_queue_from_the_queues_page(app, redis):
    Queue("emails", connection=redis).enqueue("testjobs.record", "x")
    client = app.test_client()
    login(client, "admin")
    token = csrf_of(client.get("/horizon/queues").data)
    assert client.post("/horizon/queues/emails/pause", data={"csrf": token}).status_code == 200
    assert redis.smembers("horizond:paused-queues") == {b"emails"}
    assert b'class="paused"' in client.get("/horizon/queues").data
    assert client.post("/horizon/queues/emails/continue", data={"csrf": token}).status_code == 200
    assert redis.smembers("horizond:paused-queues") == set()
    too_long = client.post(f"/horizon/queues/{'q' * 201}/pause", data={"csrf": token})
    assert too_long.status_code == 400 and b"queue pause: expected a queue name" in too_long.data
    viewer = app.test_client()
    login(viewer, "viewer")
    vtoken = csrf_of(viewer.get("/horizon/queues").data)
    refused = viewer.post("/horizon/queues/emails/pause", data={"csrf": vtoken})
    assert refused.status_code == 403 and b"permission denied: &#39;queue_pause&#39; needs full access" in refused.data
    assert redis.smembers("horizond:paused-queues") == set()


def test_failed_in_the_past_week_comes_from_the_masters_hourly_totals(start_daemon, redis, tmp_path, redis_url):
    daemon = start_daemon('[supervisors.alpha]\nqueues = ["qa"]\nmin_processes = 1\nmax_processes = 1\n')
    daemon.wait_ready({"alpha": 1})
    queue = Queue("qa", connection=redis)
    for tag in ("f1", "f2", "f3"):
        queue.enqueue("testjobs.fail", tag)
    queue.enqueue("testjobs.record", "ok")
    hour = f"horizond:hourly:{time.strftime('%Y%m%d%H', time.gmtime())}"
    wait_until(lambda: redis.hget(hour, "failed") == b"3" and int(redis.hget(hour, "processed") or 0) >= 4,
               timeout=15, what="the master's hourly totals")
    redis.hset("horizond:hourly:" + time.strftime("%Y%m%d%H", time.gmtime(time.time() - 5 * 24 * 3600)), "failed", 7)
    redis.hset("horizond:hourly:" + time.strftime("%Y%m%d%H", time.gmtime(time.time() - 8 * 24 * 3600)), "failed", 99)
    failed, reach = overview.failed_by_hour(redis, "horizond", time.time())
    assert failed == 3 + 7 and 5 * 24 < reach <= 7 * 24  # 5 days back counted, 8 days back not


def _state(redis) -> dict:
    """Every key but the dashboard's own sessions and secrets, with its value: what an action changes."""
    return {key: redis.dump(key) for key in redis.scan_iter() if not key.startswith(b"horizond:web:")}


def test_every_action_asks_the_command_layer_which_refuses_a_viewer(app, redis):
    """No route decides who may act: each POST is a command, and the layer's access check (the
    one the control socket's read-only clients meet) refuses a viewer and changes nothing."""
    [job_id] = fail_jobs(redis, "emails", ["card-4242"])
    Queue("emails", connection=redis).enqueue("testjobs.record", "pending")
    actions = {  # POST route -> (path, form, the command the layer names when it refuses)
        "web.job_retry": (f"/jobs/{job_id}/retry", {}, "retry"),
        "web.job_delete": (f"/jobs/{job_id}/delete", {}, "forget"),
        "web.failed_bulk": ("/failed/bulk", {"action": "retry", "q": "card"}, "retry"),
        "web.failed_bulk/delete": ("/failed/bulk", {"action": "delete", "queue": "emails"}, "flush"),
        "web.supervisor_action": ("/supervisors/a/pause", {}, "fleet"),
        "web.supervisor_action/scale": ("/supervisors/a/scale", {"processes": "3"}, "fleet"),
        "web.supervisor_action/restart": ("/supervisors/a/restart", {}, "fleet"),
        "web.queue_pause": ("/queues/emails/pause", {}, "queue_pause"),
        "web.queue_clear": ("/queues/emails/clear", {"confirm": "emails"}, "clear"),
    }
    posts = {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in rule.methods} - {"web.login_post",
                                                                                              "web.logout"}
    assert posts == {name.partition("/")[0] for name in actions}  # a new POST route needs its line here
    viewer = app.test_client()
    login(viewer, "viewer")
    token = csrf_of(viewer.get("/horizon/").data)
    before = _state(redis)
    for name, (path, form, cmd) in actions.items():
        reply = viewer.post(f"/horizon{path}", data={"csrf": token, **form})
        assert reply.status_code == 403, name
        assert f"permission denied: &#39;{cmd}&#39; needs full access".encode() in reply.data, name
    assert _state(redis) == before
    assert redis.zscore("rq:failed:emails", job_id) is not None and redis.llen("rq:queue:emails") == 1


def test_bulk_delete_of_a_filter_goes_through_the_layer_in_chunks(app, redis, monkeypatch):
    from horizond.control import failed

    monkeypatch.setattr(failed, "BATCH", 7)
    monkeypatch.setattr(failed, "BUDGET", 0.0)  # each request to the layer one batch: several chunks
    alpha = fail_jobs(redis, "emails", [f"alpha-{i}" for i in range(20)])
    beta = fail_jobs(redis, "emails", [f"beta-{i}" for i in range(5)])
    client = app.test_client()
    login(client, "admin")
    token = csrf_of(client.get("/horizon/failed?q=ALPHA").data)
    unknown = client.post("/horizon/failed/bulk", data={"csrf": token, "action": "delete", "queue": "nope"})
    assert unknown.status_code == 400 and b"unknown queue &#39;nope&#39;" in unknown.data
    assert not list(redis.scan_iter("horizond:web:bulk:*"))  # refused before anything was recorded
    started = client.post("/horizon/failed/bulk", data={"csrf": token, "action": "delete", "q": "ALPHA"})
    assert started.status_code == 303
    progress = started.headers["Location"] + "?format=json"
    done = wait_until(lambda: (s := client.get(progress).get_json())["state"] != "running" and s, 10,
                      what="the bulk delete")
    assert (done["state"], done["done"], done["total"]) == ("done", "20", "25")
    assert int(done["chunks"]) >= 4  # 25 entries, 7 a batch
    assert {j.decode() for j in redis.zrange("rq:failed:emails", 0, -1)} == set(beta)
    assert not any(redis.exists(f"rq:job:{j}") for j in alpha)


def test_the_web_daemon_serves_redis_and_says_what_needs_a_master(app, redis):
    from horizond.control.commands import CommandLayer
    from horizond.control.daemon import Daemon, FleetAgent

    daemon = app.extensions["daemon"]
    assert isinstance(daemon, Daemon) and isinstance(daemon.fleet, FleetAgent)
    layer = CommandLayer(daemon.acting_as("ann"))
    for cmd, args in (("status", {}), ("workers", {}), ("pause", {}), ("pause", {"supervisor": "a"}),
                      ("continue", {"supervisor": "a"}), ("scale", {"supervisor": "a", "processes": 2}),
                      ("restart", {}), ("reload", {}), ("terminate", {}), ("queues", {}), ("stats", {}),
                      ("metrics", {}), ("health", {}), ("cron", {})):
        reply = layer.handle({"cmd": cmd, "args": args}, "full")
        assert not reply["ok"] and reply["error"].startswith(f"{cmd!r} needs a running master: "), (cmd, reply)
        assert "the dashboard's process, which supervises nothing" in reply["error"], reply
    [job_id] = fail_jobs(redis, "emails", ["x"])
    assert [j["id"] for j in layer.handle({"cmd": "failed"}, "read")["result"]] == [job_id]
    assert layer.handle({"cmd": "ping"}, "read")["result"]["pid"] == os.getpid()
    sent = layer.handle({"cmd": "fleet", "args": {"action": "pause"}}, "full")
    assert sent["ok"] and sent["result"]["nodes"] == []  # no live node; the dashboard is none
    assert redis.hgetall("horizond:fleet:desired") == {b"pause:*": b"1"}
    [(_, fields)] = redis.xrange("horizond:fleet:commands")
    assert fields[b"from"] == b"web:ann" and fields[b"cmd"] == b"pause"


SLO_TABLES = ('\n[slo."pay*"]\nthroughput = 60\nmax_latency = 2.0\nsuccess_rate = 99\nwindow = 600\n'
              '[slo.calm]\nthroughput = 10\nmax_latency = 30\nsuccess_rate = 90\n')


def test_service_levels_page_and_snapshot_show_the_slo_command(tmp_path, redis_url, redis):
    config = load(str(write_config(tmp_path, redis_url, extra=SLO_TABLES)))
    app = create_app(config, redis)
    Queue("payments", connection=redis).enqueue("testjobs.record", "waiting")
    record_levels(redis, config.slos, "payments", ok=8, failed=2, latency=0.5)
    client = app.test_client()
    login(client, "viewer")  # viewers may read the levels
    html = client.get("/horizon/slo").data.decode()
    row = re.search(r'<tr data-queue="payments">(.*?)</tr>', html, re.S)[1]
    assert "violated" in row and "slo-red" in row and "pay*" in row and "80 %" in row  # 8 of 10 succeeded
    calm = re.search(r'<tr data-queue="calm">(.*?)</tr>', html, re.S)[1]
    assert "no data" in calm  # named exactly: shown before its first job
    snap = client.get("/horizon/api/snapshot").get_json()
    rows = {r["queue"]: r for r in snap["slo"]["queues"]}
    assert (rows["payments"]["state"], rows["payments"]["jobs"], rows["payments"]["success_rate"]) == \
        ("violated", 10, 80.0)
    assert rows["payments"]["objective"] == {"throughput": 60, "max_latency": 2.0, "success_rate": 99, "window": 600}
    assert rows["calm"]["state"] == "no data" and snap["slo"]["configured"] == ["pay*", "calm"]
    slo_check = next(i for i in snap["health"]["indicators"] if i["name"] == "slo")
    assert slo_check["level"] == "red" and "payments" in slo_check["detail"] and snap["health"]["status"] == "red"
    overview_html = client.get("/horizon/").data.decode()
    assert 'id="slo-brief"' in overview_html and "violated" in overview_html
