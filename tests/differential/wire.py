"""A raw QMP connection: bytes in, parsed JSON lines out, nothing smoothed over.

The differential tests must send what no well-behaved client would (broken JSON, half an object, a bare array)
and see exactly what comes back, so this deliberately does not use qemu.qmp.  QEMU writes one JSON object per
line (CRLF); events and command replies share the stream, so every message read is sorted into ``events``
(it has an ``"event"`` member) or handed back as a reply.
"""

from __future__ import annotations

import json
import select
import socket
import time


class WireError(AssertionError):
    """The peer broke the QMP framing (a line that is not JSON, a closed socket, no answer in time)."""


class RawQMP:
    """One QMP connection over a unix socket; reads the greeting on connect."""

    def __init__(self, path: str, timeout: float = 10.0, greet: bool = True) -> None:
        """Connect; ``greet=False`` leaves reading the greeting to :meth:`read_greeting` (QEMU greets a client
        only once it serves it, i.e. after the previous client left)."""
        self.path = path
        self.timeout = timeout
        self.events: list[dict] = []
        self.lines: list[bytes] = []  #: every line received, as sent (for failure messages)
        self._buffer = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self.greeting: dict = self.read_greeting() if greet else {}

    def read_greeting(self) -> dict:
        self.greeting = self._read_message(self.timeout)
        return self.greeting

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RawQMP":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: bytes | dict | list | str | int | float | None) -> None:
        """Send ``message``: bytes go out verbatim, anything else as compact JSON (no newline, like qemu.qmp)."""
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self._sock.sendall(data)

    def reply(self, timeout: float | None = None) -> dict:
        """The next message that is not an event (events seen on the way are kept in ``events``)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self._read_message(max(0.0, deadline - time.monotonic()))
            if "event" in message and "timestamp" in message:
                self.events.append(message)
                continue
            return message

    def replies_until(self, sync_id: str, timeout: float | None = None) -> list[dict]:
        """Every reply up to (not including) the one whose ``id`` is ``sync_id``."""
        out = []
        while True:
            message = self.reply(timeout)
            if message.get("id") == sync_id:
                return out
            out.append(message)

    def pump_events(self, duration: float) -> None:
        """Read for ``duration`` seconds, keeping events; a command reply arriving now is a framing error."""
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._read_message(left)
            except TimeoutError:
                return
            if "event" not in message:
                raise WireError(f"unsolicited reply {message!r}")
            self.events.append(message)

    def _read_message(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._sock], [], [], left)[0]:
                raise TimeoutError(f"no QMP message within {timeout:.1f} s on {self.path}")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise WireError(f"QMP connection closed by the peer ({self.path})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line + b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise WireError(f"peer sent a line that is not JSON: {line!r}") from exc
        if not isinstance(message, dict):
            raise WireError(f"peer sent a JSON value that is not an object: {line!r}")
        return message

    def wait_closed(self, timeout: float) -> bool:
        """True once the peer closed the connection (after ``quit``); other messages are kept as events."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self._sock], [], [], left)[0]:
                return False
            chunk = self._sock.recv(65536)
            if not chunk:
                return True
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = json.loads(line)
                if "event" in message:
                    self.events.append(message)
        return False
