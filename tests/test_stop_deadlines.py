"""A stopping worker's deadline is judged on what it has said, including what the loop has not
read yet: reports are read in batches (children.py REPORTS_EVERY), so a worker's 'busy' may still
sit in its channel when the stop deadline of an 'idle' worker falls due. Killing it then would
cut a job short that had just started (and, under shutdown_grace = 0, run it twice)."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from horizond.core.config import parse
from horizond.supervise.master import Master
from horizond.supervise.process import WorkerProcess
from horizond.worker.channel import StateWriter, WorkerLink
from horizond.worker.child import ChildSpec


def _master(redis_url: str, tmp_path) -> Master:
    config = parse(f'[redis]\nurl = "{redis_url}"\n[control]\nsocket = "{tmp_path}/ctl.sock"\n'
                   '[master]\nshutdown_grace = 0\n[supervisors.alpha]\nqueues = ["qa"]\n', "test.toml")
    return Master(config, lambda: config)


def _stopping_idle_worker(master: Master) -> tuple[WorkerProcess, StateWriter]:
    """A real child process in its own group, which the master told to stop 1 s ago while it
    looked idle: by the master's view its deadline (stop + grace 0) has passed."""
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        time.sleep(60)
        os._exit(0)
    os.setpgid(pid, pid)
    master_end, worker_end = socket.socketpair()
    link = WorkerLink(master_end.detach())
    sup = master.config.supervisors[0]
    spec = ChildSpec(kind="worker", redis=None, master_pid=os.getpid(), log_level=0, supervisor=sup,
                     queues=sup.queues)
    proc = WorkerProcess(pid=pid, spec=spec, link=link, generation=1, state="idle", name="w")
    proc.stop_sent = time.monotonic() - 1.0
    master.children[pid] = proc
    return proc, StateWriter(worker_end.detach())


def _alive(pid: int) -> bool:
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


@pytest.mark.parametrize("busy_unread", [True, False])
def test_a_busy_report_still_unread_saves_a_stopping_worker_from_its_idle_deadline(busy_unread, redis_url, tmp_path):
    master = _master(redis_url, tmp_path)
    proc, writer = _stopping_idle_worker(master)
    try:
        if busy_unread:  # it took a job just before the stop reached it; the loop has not read that yet
            writer.send(s="busy", job="j1", q="qa", t=time.time(), timeout=60)
        next_deadline = master._enforce_stop_deadlines(time.monotonic())
        if busy_unread:
            assert proc.kill_sent is None and _alive(proc.pid), "a worker that had just started a job was killed"
            assert proc.state == "busy" and proc.job_id == "j1"
            assert 55 < next_deadline < 61  # its job's timeout from now, plus a grace of 0
        else:  # idle for real: the deadline holds
            assert proc.kill_sent is not None
            assert os.waitpid(proc.pid, 0)[1] == signal.SIGKILL
    finally:
        if proc.kill_sent is None:
            os.killpg(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
        proc.link.close()
        os.close(writer.fd)
