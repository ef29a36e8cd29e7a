"""Adversarial clients of the control socket and /metrics (issue 13, items 1, 9 and 10).

Each attacker is a real process on a real socket, most of them under another uid (`nobody`),
against a real daemon. Each test shows that the master lives, that root still gets `status`
promptly while the attack goes on, and that the log stays bounded. Each failed before its fix.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from test_control_security import DAEMON_GID, NOBODY, NOGROUP, USERS_GID, as_other_user, forked_as

from conftest import free_port, horizonctl, wait_until
from horizond.control.ctl import request

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="attackers run as another uid: switching needs root")

ONE = '[supervisors.alpha]\nqueues = ["qa"]\n'
PROMPT = 1.0  # seconds: what root's `status` may take while an attack goes on




def start(start_daemon, public_dir: str, extra_control: str = "", body: str = ONE):
    daemon = start_daemon(body, socket_path=os.path.join(public_dir, "ctl.sock"), extra_control=extra_control)
    daemon.wait_ready({"alpha": 1})
    return daemon


def status_times(daemon, seconds: float) -> list[float | dict]:
    """Root asks for `status` over and over for `seconds`: how long each answer took (or the failure)."""
    times: list[float | dict] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        try:
            answered = request(daemon.socket, "status", timeout=5)
        except Exception as exc:
            answered = {"error": repr(exc)}
        times.append(time.monotonic() - began if answered.get("ok") else answered)
        time.sleep(0.02)
    return times


def assert_prompt(times: list[float | dict]) -> None:
    missed = [t for t in times if isinstance(t, dict)]
    assert not missed, f"status went unanswered {len(missed)} times out of {len(times)}: {missed[:3]}"
    assert max(times) < PROMPT, f"status took up to {max(times):.2f} s during the attack"
    print(f"status: {len(times)} answers during the attack, the slowest in {max(times) * 1000:.0f} ms")


def events(daemon, name: str) -> list[dict]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def failed_job(redis, args: tuple, exc_string: str) -> str:
    """A job in qa's failed registry as RQ leaves it."""
    job = Job.create("testjobs.record", args=args, connection=redis, origin="qa")
    job.ended_at = datetime.now(UTC)
    job.set_status(JobStatus.FAILED)
    job.save()
    FailedJobRegistry("qa", connection=redis).add(job, ttl=3600, exc_string=exc_string)
    Result.create_failure(job, ttl=3600, exc_string=exc_string)  # where RQ keeps the traceback
    return job.id


# --- item 1: nothing raised while answering one request leaves it ----------------------------------------

NESTED = {
    "arrays 1,500 deep (the issue's)": b'{"cmd":"status","x":' + b"[" * 1500 + b"]" * 1500 + b"}\n",
    "objects 1,200 deep": b'{"cmd":"status","x":' + b'{"a":' * 1200 + b"1" + b"}" * 1200 + b"}\n",
}


@pytest.mark.parametrize("payload", NESTED.values(), ids=NESTED.keys())
def test_deeply_nested_json_from_a_reader_gets_an_error_and_changes_nothing(start_daemon, public_dir, payload):
    daemon = start(start_daemon, public_dir, extra_control='readers = "nogroup"\n')
    workers = daemon.worker_pids()
    answer = as_other_user(daemon.socket, payload, NOGROUP, [])
    assert isinstance(answer, dict), f"no reply ({answer}); master exit code: {daemon.proc.poll()}"
    assert answer["ok"] is False and answer["error"] == "malformed request: nested deeper than 32 levels", answer
    assert daemon.proc.poll() is None
    assert daemon.status()["state"] == "running" and daemon.worker_pids() == workers
    assert "Traceback" not in daemon.log_path.read_text()


def test_a_command_that_raises_is_answered_and_logged_with_its_name_a_line_per_few_seconds(start_daemon, redis,
                                                                                          public_dir):
    daemon = start(start_daemon, public_dir)
    redis.hset("rq:job:broken", mapping={"data": b"not a pickle", "status": "failed", "origin": "qa"})
    redis.zadd("rq:failed:qa", {"broken": time.time() + 3600})
    shown = horizonctl("failed", "show", "broken", socket_path=daemon.socket)
    assert shown.returncode == 3 and "internal error in 'failed_show': DeserializationError" in shown.stderr, shown
    for _ in range(300):
        answer = request(daemon.socket, "failed_show", job_id="broken")
        assert answer["ok"] is False and "'failed_show'" in answer["error"]
    assert daemon.status()["state"] == "running"
    logged = events(daemon, "control_error")
    assert 1 <= len(logged) <= 3, f"{len(logged)} control_error lines for 301 failures"
    assert all(e["cmd"] == "failed_show" for e in logged)
    assert "DeserializationError" in logged[0]["exc_info"]


# --- item 9: big replies ----------------------------------------------------------------------------------


def test_failed_show_and_list_a_job_with_50_mb_of_arguments_without_unpacking_them(start_daemon, redis, public_dir):
    """Unpacking 50 MB of arguments held the loop 0.3 s per request (sending them, 2.2 s)."""
    daemon = start(start_daemon, public_dir)
    job_id = failed_job(redis, ("x" * 50_000_000,), "Traceback ...\nRuntimeError: too big to fail")
    began = time.monotonic()
    assert request(daemon.socket, "failed_show", job_id=job_id)["ok"]
    took = time.monotonic() - began
    shown = horizonctl("failed", "show", job_id, socket_path=daemon.socket)
    assert shown.returncode == 0, shown.stderr
    assert "args:         [not shown: over 1048576 bytes serialized, too big to unpack in the daemon]" in shown.stdout
    assert "func:         testjobs.record\n" in shown.stdout  # from the description RQ keeps
    assert shown.stdout.rstrip().endswith("RuntimeError: too big to fail")
    assert len(shown.stdout) < 2000
    listed = json.loads(horizonctl("failed", "--json", socket_path=daemon.socket).stdout)
    assert [(j["id"], j["func"], j["exception"]) for j in listed] == [(job_id, "testjobs.record",
                                                                      "RuntimeError: too big to fail")]
    assert took < 0.1, f"failed show took {took:.2f} s"
    print(f"failed show of a job with 50 MB of arguments: answered in {took * 1000:.0f} ms")


def test_a_client_that_does_not_read_big_replies_stalls_nobody_and_is_dropped(start_daemon, redis, public_dir):
    """A reply bigger than the socket buffer (non-ASCII is 6 bytes a character in JSON): the old
    blocking send held the loop 2 s per such client."""
    daemon = start(start_daemon, public_dir, extra_control='group = "daemon"\n')
    job_id = failed_job(redis, ("é" * 100_000,), "Traceback ...\n" + "é" * 200_000 + "\nRuntimeError: boom")
    shown = request(daemon.socket, "failed_show", job_id=job_id)["result"]
    assert shown["args"].endswith(" [cut: 100005 characters, the first 10000 shown]")
    assert shown["traceback"].startswith("[cut: 200033 characters, the last 50000 shown]\n")
    full = len(json.dumps(shown).encode())
    assert full > 300_000
    payload = json.dumps({"v": 1, "cmd": "failed_show", "args": {"job_id": job_id}}).encode() + b"\n"

    def never_read():
        held, end = [], time.monotonic() + 3
        while time.monotonic() < end:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket)
            try:
                sock.sendall(payload)
            except BrokenPipeError:  # over the limit: told "busy" and hung up on
                pass
            held.append(sock)
            time.sleep(0.05)
        time.sleep(4)  # past the daemon's 5 s deadline for the first ones
        first = held[0]
        first.settimeout(2)
        got = 0
        while chunk := first.recv(65536):
            got += len(chunk)
        return {"received": got}

    attack = forked_as(never_read, USERS_GID, [DAEMON_GID])
    times = status_times(daemon, 3)
    outcome = attack(timeout=20)
    assert "received" in outcome, outcome
    received = outcome["received"]
    assert_prompt(times)
    assert 0 < received < full, f"the silent client got {received} of {full} bytes before being dropped"
    assert daemon.status()["state"] == "running"
    assert len(events(daemon, "control_busy")) <= 3


def test_a_reply_over_the_buffer_limit_is_an_error_that_says_what_to_do(start_daemon, redis, public_dir):
    daemon = start(start_daemon, public_dir)
    row = json.dumps({"time": time.time(), "pending": 0, "processes": 1, "jobs_per_minute": 0,
                      "failed_last_hour": 0, "recent_runtime": None, "wait": None, "pad": "p" * 200})
    redis.lpush("horizond:snapshots:qa", *[row] * 20_000)
    result = horizonctl("trends", "qa", "--limit", "20000", "--json", socket_path=daemon.socket)
    assert result.returncode == 3 and "reply too large" in result.stderr and "--limit" in result.stderr, result
    fewer = horizonctl("trends", "qa", "--limit", "100", "--json", socket_path=daemon.socket)
    assert fewer.returncode == 0 and len(json.loads(fewer.stdout)) == 100


# --- item 10: connection slots and log floods -------------------------------------------------------------


def test_one_uid_holding_64_silent_connections_leaves_root_an_answer(start_daemon, public_dir):
    daemon = start(start_daemon, public_dir, extra_control='readers = "nogroup"\n')

    def hold_silently():
        held, answers = [], []
        for _ in range(64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(daemon.socket)
            held.append(sock)
        for sock in held:  # those over the limit were told so at once
            sock.settimeout(0.2)
            try:
                answers.append(sock.recv(4096).decode())
            except TimeoutError:
                answers.append(None)
        time.sleep(2.5)
        return answers

    attack = forked_as(hold_silently, NOGROUP, [])
    times = status_times(daemon, 2.5)
    answers = attack(timeout=20)
    assert_prompt(times)
    busy = [a for a in answers if a]
    assert len(busy) == 64 - 8 and "already holds 8 open control connections" in json.loads(busy[0])["error"]
    wait_until(lambda: as_other_user(daemon.socket, b'{"v": 1, "cmd": "status"}\n', NOGROUP, [])["ok"],
               what="the reader's slots to be free again once it hung up")
    assert len(events(daemon, "control_busy")) <= 3


def test_a_flood_of_requests_from_one_uid_leaves_root_prompt_answers(start_daemon, redis, public_dir):
    """Served a few per batch of accepted connections, the flood's requests cannot queue ahead of root's."""
    daemon = start(start_daemon, public_dir, extra_control='group = "daemon"\n')
    job_id = failed_job(redis, ("x" * 500_000,), "boom")  # a few ms of the loop per `failed show`
    payload = json.dumps({"v": 1, "cmd": "failed_show", "args": {"job_id": job_id}}).encode() + b"\n"

    def flood():
        sent, end = 0, time.monotonic() + 3
        while time.monotonic() < end:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(daemon.socket)
                try:
                    sock.sendall(payload)
                except BrokenPipeError:  # told "busy"
                    pass
            sent += 1
        return {"sent": sent}

    attack = forked_as(flood, USERS_GID, [DAEMON_GID])
    times = status_times(daemon, 3)
    sent = attack(timeout=20)["sent"]
    assert_prompt(times)
    assert sent > 1000
    assert daemon.status()["state"] == "running"
    assert len(events(daemon, "control_busy")) <= 2


def test_a_flood_from_a_refused_uid_is_logged_a_line_per_window_with_a_count(start_daemon, public_dir):
    daemon = start(start_daemon, public_dir)
    os.chmod(daemon.socket, 0o777)  # opened up by mistake: SO_PEERCRED still refuses

    def flood():
        refused, end = 0, time.monotonic() + 2
        while time.monotonic() < end:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(daemon.socket)
                refused += b"permission denied" in sock.recv(4096)
        return {"refused": refused}

    attack = forked_as(flood, NOGROUP, [])
    times = status_times(daemon, 2)
    refused = attack(timeout=20)["refused"]
    assert_prompt(times)
    assert refused > 200
    assert len(events(daemon, "control_refused")) <= 2
    summary = wait_until(lambda: [e for e in events(daemon, "control_refused") if e.get("repeated")], timeout=8,
                         what="the summary of the refusals held back")
    total = sum(e.get("repeated", 1) for e in events(daemon, "control_refused"))
    assert total == refused and summary[0]["peer_uid"] == NOBODY
    print(f"{refused} refusals in 2 s: {len(events(daemon, 'control_refused'))} log lines")


def test_a_slowloris_on_metrics_does_not_starve_healthz(start_daemon, public_dir):
    port = free_port()
    daemon = start(start_daemon, public_dir, body=f'[metrics]\nlisten = "127.0.0.1:{port}"\n' + ONE)

    def slowloris():
        held, end = [], time.monotonic() + 3
        while time.monotonic() < end:
            while len(held) < 24:  # more than the 16 slots: reopened as the daemon drops them
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                except OSError:
                    break
                held.append(sock)
            time.sleep(0.02)
            for sock in list(held):
                try:
                    sock.sendall(b"X")  # a byte at a time, never the end of the headers
                except OSError:
                    held.remove(sock)
                    sock.close()
        return {"held": len(held)}

    attack = forked_as(slowloris, NOGROUP, [])
    answered, end = [], time.monotonic() + 2.5
    time.sleep(0.3)  # the slots are full by now
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                answered.append(response.status)
        except urllib.error.HTTPError as exc:
            answered.append(exc.code)
        except OSError as exc:
            answered.append(repr(exc))
        time.sleep(0.05)
    attack(timeout=20)
    print(f"/healthz: {len(answered)} probes during the slowloris")
    assert answered and all(code in (200, 503) for code in answered), [c for c in answered if c not in (200, 503)]
    assert daemon.status()["state"] == "running"
