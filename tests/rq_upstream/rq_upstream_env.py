"""What RQ's upstream tests run against: the test Redis, and the worker class picked.

RQ's suite reaches Redis as `Redis()` (localhost:6379), as
`redis://127.0.0.1:6379/N` for the `rqworker` subprocesses it starts, and through
connection kwargs handed to forked helpers. It is never edited here: every TCP
connection redis-py makes to a loopback 6379 goes to RQ_UPSTREAM_REDIS_PORT
instead, and the peer port of every socket it opens is appended to
RQ_UPSTREAM_CONNECT_LOG, so scripts/rq-upstream can prove that nothing reached
the Redis service that may be running on 6379.
"""

from __future__ import annotations

import os

LOOPBACK = {"localhost", "127.0.0.1", "::1"}
DEFAULT_PORT = 6379
_seen: set[tuple[int, int]] = set()


def install_redis() -> int | None:
    """Redirect redis-py when RQ_UPSTREAM_REDIS_PORT is set; the port, else None."""
    port = os.environ.get("RQ_UPSTREAM_REDIS_PORT")
    if not port:
        return None
    from redis.connection import Connection

    if getattr(Connection, "_rq_upstream_port", None):
        return Connection._rq_upstream_port
    target = int(port)
    original_init, original_connect = Connection.__init__, Connection._connect

    def __init__(self, host="localhost", port=DEFAULT_PORT, *args, **kwargs):
        if host in LOOPBACK and int(port) == DEFAULT_PORT:
            host, port = "127.0.0.1", target
        original_init(self, host, port, *args, **kwargs)

    def _connect(self):
        sock = original_connect(self)
        _record(sock.getpeername()[1])
        return sock

    Connection.__init__, Connection._connect = __init__, _connect
    Connection._rq_upstream_port = target
    return target


def _record(peer_port: int) -> None:
    path = os.environ.get("RQ_UPSTREAM_CONNECT_LOG")
    if not path or (os.getpid(), peer_port) in _seen:
        return
    _seen.add((os.getpid(), peer_port))
    with open(path, "a") as log:  # one short line per process and port: O_APPEND keeps them whole
        log.write(f"{os.getpid()} {peer_port}\n")


# --- the worker under test ---------------------------------------------------------------

MODES = ("stock", "simple", "lean", "horizon")


def install_worker(mode: str) -> type | None:
    """Bind RQ's public worker names to the class under test; the class, or None for stock.

    Both SimpleWorker and the forking Worker are rebound: horizond runs the lean worker
    where a user would run `rq worker`, and most of RQ's job, registry, retry and result
    tests drive a `Worker`; tests that need Worker's work horse fail under RQ's own
    SimpleWorker too (mode "simple"), which is how expected_failures.txt tells them apart.
    Only the names tests import are rebound (rq, rq.worker); RQ's own subclasses
    (HerokuWorker, RoundRobinWorker, SpawnWorker...) stay stock, bound at import.
    """
    if mode not in MODES:
        raise ValueError(f"RQ_UPSTREAM_WORKER={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "stock":
        return None
    import rq
    import rq.worker

    if mode == "simple":  # the lean worker's base: tells a lean-worker difference from a no-horse one
        cls = rq.worker.SimpleWorker
    elif mode == "lean":
        from horizond.worker.leanworker import LeanWorker as cls
    else:
        cls = _horizon_worker_class()
    for module in (rq, rq.worker):
        module.SimpleWorker = cls
        module.Worker = cls
    if mode == "horizon":  # its workers take only HorizonQueue objects (or names), as horizond gives them
        import rq.queue

        rq.Queue = rq.queue.Queue = cls.queue_class
    return cls


def _horizon_worker_class() -> type:
    """The class a horizond worker process runs (HorizonLeanWorker), attached to a
    master that is not there: state reports go to /dev/null, the supervisor policy
    is the default one, and there is no pause gate (dequeue.GATE stays None). Its queue
    class, HorizonQueue, replaces rq.Queue for the tests: only its multi-queue dequeue differs."""
    from horizond.core.config import SupervisorConfig
    from horizond.worker.channel import StateWriter
    from horizond.worker.rqworker import HorizonLeanWorker

    class UpstreamHorizonWorker(HorizonLeanWorker):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.horizon_attach(StateWriter(_devnull()), SupervisorConfig(name="rq-upstream"))

    UpstreamHorizonWorker.__name__ = UpstreamHorizonWorker.__qualname__ = "HorizonLeanWorker"
    return UpstreamHorizonWorker


_DEVNULL: list[int] = []


def _devnull() -> int:
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_WRONLY))
    return _DEVNULL[0]


INSTALLED: dict = {}


def install() -> dict:
    """Everything the environment asks for, once per process (sitecustomize, then the plugin)."""
    if not INSTALLED:
        mode = os.environ.get("RQ_UPSTREAM_WORKER", "stock")
        INSTALLED.update(redis_port=install_redis(), mode=mode, worker_class=install_worker(mode))
    return INSTALLED
