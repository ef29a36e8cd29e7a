"""LoopServer: a listening socket served from the master's selector, without threads.

One request and one response per connection, a cap on open connections and a
deadline for each, so a slow or silent client can never hold the loop. Subclasses
decide who is admitted and what a complete request is answered with.
"""

from __future__ import annotations

import selectors
import socket
import time


class LoopServer:
    max_clients = 16
    client_timeout = 5.0

    def __init__(self, selector: selectors.BaseSelector):
        self.selector = selector
        self.sock: socket.socket | None = None
        self._clients: dict[socket.socket, tuple[float, bytearray, object]] = {}

    # --- for subclasses --------------------------------------------------------------------

    def admit(self, conn: socket.socket) -> object | None:
        """Context kept for the connection; None refuses it (the subclass has answered)."""
        return True

    def busy_reply(self) -> bytes:
        return b""

    def reply(self, request: bytes, context: object, ended: bool) -> bytes | None:
        """The response to send, or None while the request is incomplete (b"": close silently)."""
        raise NotImplementedError

    # --- the shell -------------------------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for conn in list(self._clients):
            self._drop(conn)
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def expire(self, now: float) -> None:
        for conn, (since, _, _) in list(self._clients.items()):
            if now - since > self.client_timeout:
                self._drop(conn)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:  # EAGAIN, or out of fds: the loop goes on, the client retries
            return
        if len(self._clients) >= self.max_clients:
            send(conn, self.busy_reply())
            conn.close()
            return
        context = self.admit(conn)
        if context is None:
            conn.close()
            return
        conn.setblocking(False)
        self._clients[conn] = (time.monotonic(), bytearray(), context)
        self.selector.register(conn, selectors.EVENT_READ, lambda: self._readable(conn))
        self._readable(conn)  # the request is usually there already: answer now, not a loop turn later

    def _readable(self, conn: socket.socket) -> None:
        _, buffer, context = self._clients[conn]
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        buffer += chunk
        response = self.reply(bytes(buffer), context, ended=not chunk)
        if response is None and chunk:
            return  # more to come
        self._drop(conn, close=False)
        send(conn, response or b"")
        conn.close()

    def _drop(self, conn: socket.socket, close: bool = True) -> None:
        self._clients.pop(conn, None)
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        if close:
            conn.close()


def send(conn: socket.socket, data: bytes) -> None:
    """Responses are small: a bounded blocking send keeps the code simple and the loop safe."""
    if not data:
        return
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(data)
    except OSError:
        pass
