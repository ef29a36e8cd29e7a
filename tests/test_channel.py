"""The master <-> worker channel: one encoding and one parser for both ends."""

from __future__ import annotations

import os
import socket

import pytest
from rq.worker.base import StopRequested

from horizond.worker import dequeue
from horizond.worker.channel import StateWriter, WorkerLink, decode, encode


def test_one_line_format_both_ways():
    assert decode(encode({"cmd": "pause"}).rstrip(b"\n")) == {"cmd": "pause"}
    assert decode(b'{"cmd": "pause"}') == {"cmd": "pause"}  # spacing is the encoder's choice, not meaning
    assert decode(b"[1]") is None and decode(b"pause") is None and decode(b"[" * 100_000) is None


def test_the_worker_obeys_the_words_its_link_sends():
    master_end, worker_end = socket.socketpair()
    link = WorkerLink(master_end.detach())
    fd = worker_end.detach()
    gate = dequeue.Gate(fd, StateWriter(fd), paused=False)
    try:
        assert link.send(cmd="pause") and gate.is_paused()
        os.write(link.fd, b'{"cmd": "continue"}\n')  # written by hand, spaced: the same word
        gate.wait(1)
        assert not gate.paused
        os.write(link.fd, b'garbage\n{"cmd":"stop"}\n')  # an unknown line is no word at all
        with pytest.raises(StopRequested):
            gate.check()
    finally:
        link.close()
        os.close(fd)
    assert link.send(cmd="pause") is False  # closed: never raises in the master


def test_a_jobs_end_held_for_the_next_start_reaches_the_master_as_one_report_and_counts_once():
    """A worker that took its next job with the last one's end sends both facts in one line; the
    master counts the ended job once and takes up the new one. Held, then flushed: the end alone."""
    from horizond.supervise.process import WorkerProcess
    from horizond.worker.child import ChildSpec

    master_end, worker_end = socket.socketpair()
    link = WorkerLink(master_end.detach())
    writer = StateWriter(worker_end.detach())
    spec = ChildSpec(kind="worker", redis=None, master_pid=os.getpid(), log_level=0, queues=("q",))
    proc = WorkerProcess(pid=os.getpid(), spec=spec, link=link, generation=1)
    try:
        writer.send(s="busy", job="j1", q="q", t=1.0, timeout=60)
        writer.defer(s="idle", rss=1, func="f", ok=True, wait=0.5, runtime=0.25)
        [started] = link.read()  # the end is held, not sent
        assert started == {"s": "busy", "job": "j1", "q": "q", "t": 1.0, "timeout": 60}
        assert proc.apply(started, 0.0) is None and proc.state == "busy"
        writer.send(s="busy", job="j2", q="q", t=2.0, timeout=60)
        [merged] = link.read()
        assert merged["job"] == "j2" and merged["ok"] is True and merged["runtime"] == 0.25
        finished = proc.apply(merged, 1.0)
        assert finished == {"queue": "q", "func": "f", "ok": True, "wait": 0.5, "runtime": 0.25}
        assert (proc.state, proc.job_id, proc.jobs_done) == ("busy", "j2", 1)
        writer.defer(s="idle", rss=1, func="f", ok=False, wait=0.1, runtime=0.1)
        writer.flush()  # the next job went back to its queue: the end goes alone, before anything else
        writer.send(s="paused")
        ended, paused = link.read()
        assert proc.apply(ended, 2.0)["ok"] is False and proc.state == "idle" and proc.jobs_done == 2
        assert paused == {"s": "paused"}
    finally:
        link.close()
        os.close(writer.fd)
