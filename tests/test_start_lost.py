"""A job's start whose reply Redis never sends (issue 14's StartUnknown), forced, not found by chance.

A real TCP proxy stands between the daemon and a real redis-server. When a worker's start
pipeline for the marked job passes through it, the proxy forwards the pipeline (Redis writes
the start) and then cuts the connection before the reply reaches the worker: the start is
written, the worker cannot know it. Before the fix the worker took the ConnectionError for the
job's failure, RQ's failure path swallowed the second Redis error, and the job stayed "started"
by a worker that went on idle, with nobody to finish it. Now the worker quits still busy and the
master settles the job under the retry policy: it runs again, once, and finishes.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from conftest import Daemon, wait_until


class CuttingProxy:
    """Forwards TCP both ways; cuts the first connection whose client sends `marker`: after
    forwarding it and before the server's reply comes back (`written`), or before forwarding it."""

    def __init__(self, upstream: tuple[str, int], marker: tuple[bytes, ...], written: bool):
        self.upstream, self.marker, self.written = upstream, marker, written
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            state = {"cutting": False}
            threading.Thread(target=self._pump, args=(client, server, state, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, state, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, state: dict, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if outbound and not self.cut.is_set() and all(m in data for m in self.marker):
                    state["cutting"] = True  # set before forwarding: no reply can slip through
                    self.cut.set()
                    if not self.written:
                        break  # the start never reaches Redis
                elif not outbound and state["cutting"]:
                    if not data.startswith(b"-NOSCRIPT"):
                        break  # the server ran the start: the worker never hears of it
                    state["cutting"] = False  # the script was not loaded yet: the worker loads it
                    self.cut.clear()  # and sends the start again, which is cut then
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.mark.parametrize(("written", "outcome"), [(True, "retried"), (False, "requeued")])
def test_a_start_lost_on_the_wire_is_settled_and_the_job_runs_once(tmp_path, redis, redis_url, written, outcome):
    """Written: Redis ran the start, so the job is 'started' by a worker that never ran it, and
    it is retried (an attempt spent, as for any worker lost mid-job). Not written: the job sits
    in the queue's intermediate list, and it goes back to the head of its queue."""
    job = Queue("q", connection=redis).enqueue("testjobs.record", "marked")  # waits for the daemon
    url = urlparse(redis_url)
    proxy = CuttingProxy((url.hostname, url.port), (b"EVALSHA", b"intermediate", job.id.encode()), written)
    daemon = Daemon(tmp_path, f"redis://127.0.0.1:{proxy.port}/0", """
    [supervisors.alpha]
    queues = ["q"]
    min_processes = 1
    max_processes = 1
    tries = 3
    """)
    try:
        assert proxy.cut.wait(20), "the marked job's start never passed the proxy"
        wait_until(lambda: Job.fetch(job.id, connection=redis).get_status() == JobStatus.FINISHED, timeout=20,
                   what="the job to be settled and run again")
        assert redis.hget("test:runs", "marked") == b"1"  # the cut start never ran it; the retry did, once
        events = daemon.log_events()
        settled = [e for e in events if e.get("job_id") == job.id and e.get("event") == "job_recovered"]
        assert settled and settled[0].get("outcome") == outcome, [e for e in events if e.get("job_id") == job.id]
        assert not redis.zrange("rq:wip:q", 0, -1) and not redis.zrange("rq:started:q", 0, -1)
    finally:
        daemon.cleanup()
        proxy.close()
