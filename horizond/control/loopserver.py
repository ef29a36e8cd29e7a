"""LoopServer: a listening socket served from the master's selector, without threads.

One request and one response per connection, a cap on open connections and a
deadline for each, so a slow or silent client can never hold the loop. Replies
are written without blocking: what the client has not read yet waits in a
buffer of at most `max_reply` bytes, and a client that stops reading is dropped
at its deadline. When every slot is taken, the connection that has waited longest
for its request (a slowloris) makes room for the newcomer. No exception raised
while one request is answered leaves it: the client gets an error reply.
Subclasses decide who is admitted and what a complete request is answered with.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from dataclasses import dataclass, field

log = logging.getLogger("horizond.loopserver")

BACKLOG = 128  # connections the kernel holds until accepted: a burst waits there rather than being refused
ACCEPT_BATCH = BACKLOG  # connections taken per wake-up: a flood is drained, and others find room in the backlog


@dataclass(eq=False)
class _Client:
    since: float  # when the request, then the reply, began: each has client_timeout
    context: object
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview | None = None  # the reply's unsent rest, once there is one


class LoopServer:
    max_clients = 16
    client_timeout = 5.0
    max_reply = 1024 * 1024

    def __init__(self, selector: selectors.BaseSelector):
        self.selector = selector
        self.sock: socket.socket | None = None
        self._clients: dict[socket.socket, _Client] = {}

    # --- for subclasses --------------------------------------------------------------------

    def admit(self, conn: socket.socket) -> object | None:
        """Context kept for the connection; None refuses it (the subclass has answered)."""
        return True

    def refusal(self, context: object, clients: list[object]) -> bytes | None:
        """A busy reply if this client may not hold another connection besides `clients`' now."""
        return None

    def busy_reply(self) -> bytes:
        return b""

    def reply(self, request: bytes, context: object, ended: bool) -> bytes | None:
        """The response to send, or None while the request is incomplete (b"": close silently)."""
        raise NotImplementedError

    def failed_reply(self, request: bytes, context: object, exc: Exception) -> bytes:
        """reply() raised: log it, and answer with an error (the loop and other clients go on)."""
        log.error("request failed", exc_info=exc, extra={"event": "request_error"})
        return b""

    def too_large(self, size: int, context: object) -> bytes:
        return b""

    def housekeeping(self, now: float, closing: bool = False) -> None:
        """Called on every expire() pass, and at close (summaries of throttled logs are due)."""

    # --- the shell -------------------------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn)
        self.housekeeping(time.monotonic(), closing=True)
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def expire(self, now: float) -> None:
        for conn, client in list(self._clients.items()):
            if now - client.since > self.client_timeout:
                self._drop(conn)
        self.housekeeping(now)

    def _accept(self) -> None:
        """Take a batch of waiting connections, then answer those admitted: a client's slots
        are counted before any of its requests is served, so one that floods the backlog gets
        a few requests served per batch, and the others in the batch are not stuck behind it."""
        admitted = []
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except OSError:  # EAGAIN (all taken), or out of fds: the loop goes on, the client retries
                break
            conn.setblocking(False)
            if self._take(conn):
                admitted.append(conn)
        for conn in admitted:  # the request is usually there already: answer now, not a loop turn later
            self._readable(conn)

    def _take(self, conn: socket.socket) -> bool:
        try:
            context = self.admit(conn)
        except Exception as exc:  # the peer vanished while being looked at, say
            log.warning("connection not admitted: %s: %s", type(exc).__name__, exc, extra={"event": "admit_failed"})
            context = None
        if context is None:
            conn.close()
            return False
        refused = self.refusal(context, [c.context for c in self._clients.values()])
        if refused is None and len(self._clients) >= self.max_clients and not self._evict_slowest():
            refused = self.busy_reply()
        if refused is not None:
            send_now(conn, refused)
            conn.close()
            return False
        self._clients[conn] = _Client(time.monotonic(), context)
        self.selector.register(conn, selectors.EVENT_READ, lambda: self._readable(conn))
        return True

    def _evict_slowest(self) -> bool:
        """Drop the connection that has waited longest for its request; False if all are being answered."""
        waiting = [(c.since, conn) for conn, c in self._clients.items() if c.outbox is None]
        if not waiting:
            return False
        self._drop(min(waiting, key=lambda pair: pair[0])[1])
        return True

    def _readable(self, conn: socket.socket) -> None:
        client = self._clients.get(conn)
        if client is None:  # dropped earlier in the same batch of events (evicted, say)
            return
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        client.inbox += chunk
        request = bytes(client.inbox)
        try:
            response = self.reply(request, client.context, ended=not chunk)
        except Exception as exc:
            try:
                response = self.failed_reply(request, client.context, exc)
            except Exception:  # even the error could not be told: hang up, the loop goes on
                response = b""
        if response is None and chunk:
            return  # more to come
        self._respond(conn, client, response or b"")

    def _respond(self, conn: socket.socket, client: _Client, response: bytes) -> None:
        if len(response) > self.max_reply:
            response = self.too_large(len(response), client.context)
        if not response:
            self._drop(conn)
            return
        client.outbox, client.since = memoryview(response), time.monotonic()
        self.selector.modify(conn, selectors.EVENT_WRITE, lambda: self._writable(conn))
        self._writable(conn)  # most replies fit the socket buffer: done at once

    def _writable(self, conn: socket.socket) -> None:
        client = self._clients.get(conn)
        if client is None:
            return
        try:
            sent = conn.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the client went away: nothing more to say
            self._drop(conn)
            return
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._clients.pop(conn, None)
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()


def send_now(conn: socket.socket, data: bytes) -> None:
    """A short answer before hanging up (a refusal): one non-blocking send into an empty buffer."""
    if not data:
        return
    try:
        conn.setblocking(False)
        conn.send(data)
    except OSError:
        pass


class ThrottledLog:
    """One log line per key (a peer's uid) per `every` seconds; the ones held back are counted
    and told in a summary line when the window ends, so a flood of refusals or errors costs a
    line every few seconds, not one per request."""

    def __init__(self, logger: logging.Logger, level: int, every: float = 5.0):
        self.logger, self.level, self.every = logger, level, every
        self._windows: dict[object, list] = {}  # key -> [window start, held back, message, extra]

    def __call__(self, key: object, message: str, extra: dict, exc_info: BaseException | None = None) -> None:
        window = self._windows.get(key)
        if window is not None:
            window[1:] = [window[1] + 1, message, extra]
            return
        self._windows[key] = [time.monotonic(), 0, message, extra]
        self.logger.log(self.level, message, exc_info=exc_info, extra=extra)

    def flush(self, now: float, force: bool = False) -> None:
        for key, (start, held, message, extra) in list(self._windows.items()):
            if force or now - start >= self.every:
                del self._windows[key]
                if held:
                    self.logger.log(self.level, f"{message} ({held} more in {now - start:.0f} s)",
                                    extra={**extra, "repeated": held, "window": round(now - start, 1)})
