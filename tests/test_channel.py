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
