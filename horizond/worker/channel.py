"""Master <-> worker channel over a Unix socketpair: one JSON object per line.

Worker -> master: state changes (idle/busy, job, RSS). The master learns of each
at once through its selector (no polling), and EOF tells it the worker is gone
even before SIGCHLD is handled. Master -> worker: the few words a worker must
obey between jobs (pause, continue), read by the worker only at dequeue time.
"""

from __future__ import annotations

import json
import os

MAX_LINE = 1 << 20  # a report is under 1 KB; job ids and names are bounded in reports.py
READ_CHUNKS = 16


class StateWriter:
    """Worker side. Writes are tiny and blocking: a stuck master stalls, never corrupts."""

    def __init__(self, fd: int):
        self.fd = fd
        self._deferred: dict | None = None

    def defer(self, **message) -> None:
        """Hold a job's end report for the next report: a worker that has already taken its next
        job (leannext.py) sends the end with that job's 'busy', one message and one master read a
        job instead of two. Any other report, or flush(), sends it alone first."""
        self.flush()
        self._deferred = message

    def flush(self) -> None:
        """Send a deferred report now: the next job will not start (put back, stop, exit)."""
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self._write(deferred)

    def send(self, **message) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            if message.get("s") == "busy" and deferred.get("s") == "idle":
                message = {**deferred, **message}  # the end of the last job, then the start of this one
            else:
                self._write(deferred)
        self._write(message)

    def _write(self, message: dict) -> None:
        try:
            os.write(self.fd, encode(message))
        except (BrokenPipeError, OSError):
            pass  # the master is gone; PDEATHSIG ends this process shortly


def encode(message: dict) -> bytes:
    """One message as its line on the wire (both directions)."""
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict | None:
    """One line back into its message; None if it is not a JSON object (both ends use this one parser)."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return message if isinstance(message, dict) else None


class WorkerLink:
    """Master side of one worker's channel: non-blocking reads of its reports (reassembling
    lines split across reads) and sends of the master's words to it."""

    def __init__(self, fd: int):
        self.fd = fd
        self.closed = False
        self.fault: str | None = None  # why the worker's words are not believed any more
        self._buffer = b""
        os.set_blocking(fd, False)

    def send(self, **message) -> bool:
        """Send a word to the worker; never blocks the master (False if it could not)."""
        if self.fd < 0:
            return False
        try:
            os.write(self.fd, encode(message))
            return True
        except OSError:
            return False

    def read(self) -> list[dict]:
        """The complete messages received so far. A line that is not a JSON object, or
        one longer than MAX_LINE, sets `fault` and ends the reading: the worker is not
        to be believed any more (job code can write to this socket). At most READ_CHUNKS
        reads per call, so a flood cannot hold the loop; the selector calls again."""
        messages: list[dict] = []
        for _ in range(READ_CHUNKS):
            if self.fault is not None:
                break
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # reset: the worker died with our words unread
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            messages += self._parse(lines)
            if len(self._buffer) > MAX_LINE:
                self._fail(f"a line longer than {MAX_LINE} bytes")
        return messages

    def _parse(self, lines: list[bytes]) -> list[dict]:
        messages = []
        for line in lines:
            message = decode(line)
            if message is None:
                self._fail(f"not a JSON object: {line[:60]!r}")
                break
            messages.append(message)
        return messages

    def _fail(self, reason: str) -> None:
        if self.fault is None:
            self.fault = reason
        self._buffer = b""

    def close(self) -> None:
        self.closed = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
