"""Worker -> master state channel over a pipe: one JSON object per line.

Why a pipe: the master learns of every state change at once through its selector
(no polling), the kernel keeps each small write atomic (< PIPE_BUF), and EOF tells
the master the worker is gone even before SIGCHLD is handled.
"""

from __future__ import annotations

import json
import os


class StateWriter:
    """Worker side. Writes are tiny and blocking: a stuck master stalls, never corrupts."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, **message) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        try:
            os.write(self.fd, data)
        except (BrokenPipeError, OSError):
            pass  # the master is gone; PDEATHSIG ends this process shortly


class StateReader:
    """Master side: non-blocking reads, reassembling lines split across reads."""

    def __init__(self, fd: int):
        self.fd = fd
        self.closed = False
        self._buffer = b""
        os.set_blocking(fd, False)

    def read(self) -> list[dict]:
        messages = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                messages.append(message)
        return messages

    def close(self) -> None:
        self.closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
