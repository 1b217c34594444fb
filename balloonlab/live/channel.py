"""The host end of the guest's command channel (the guest's second serial port, a unix socket on the host).

Protocol (the guest side is ``init.sh``): the host writes ``\\n@CMD@ TOKEN BASE64(command)\\n``; the guest runs the
command with ``sh`` and writes ``@BEGIN@ TOKEN\\n`` + output + ``\\n@END@ TOKEN STATUS\\n``.  Each command has a fresh
random token, so output of an earlier command that timed out on the host is recognised and skipped, and a
command's output can contain anything (it would have to print the token to confuse us).  Base64 keeps quotes,
newlines and non-ASCII in the command intact on a line-based channel.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import GuestExecError


@dataclass(frozen=True)
class ExecResult:
    """What a guest command printed (stdout and stderr interleaved) and its exit status."""

    output: str
    exit_code: int


class CommandChannel:
    """One connection to the command socket, shared by all threads (one command at a time)."""

    def __init__(self, socket_path: Path, process_alive: Callable[[], bool]) -> None:
        self._path = socket_path
        self._alive = process_alive
        self._conn: socket.socket | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def run(self, command: str, timeout: float) -> ExecResult:
        """Run ``command`` in the guest; GuestExecError if it is not done within ``timeout`` s or QEMU goes."""
        deadline = time.monotonic() + timeout
        token = secrets.token_hex(8).encode()
        with self._lock:
            conn = self._connect()
            try:
                conn.sendall(b"\n@CMD@ " + token + b" " + base64.b64encode(command.encode()) + b"\n")
                return self._read_result(conn, token, deadline, command, timeout)
            except OSError as exc:
                self._drop()
                raise GuestExecError(f"lost the guest's command channel running {command!r}: {exc}") from None

    def close(self) -> None:
        conn = self._conn
        if conn is not None:  # wakes a command waiting in another thread, which then gives up the lock
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._drop()

    def _connect(self) -> socket.socket:
        if self._conn is None:
            if not self._alive():
                raise GuestExecError("QEMU is not running")
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(str(self._path))
            except OSError as exc:
                conn.close()
                raise GuestExecError(f"cannot reach the guest's command channel {self._path}: {exc}") from None
            self._conn, self._buf = conn, b""
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read_result(self, conn: socket.socket, token: bytes, deadline: float, command: str,
                     timeout: float) -> ExecResult:
        begin = b"@BEGIN@ " + token + b"\n"
        end = re.compile(rb"\n@END@ " + re.escape(token) + rb" (\d+)\n")
        while True:
            start = self._buf.find(begin)
            if start >= 0:
                m = end.search(self._buf, start + len(begin))
                if m:
                    output = self._buf[start + len(begin):m.start()]
                    self._buf = self._buf[m.end():]
                    return ExecResult(output.decode("utf-8", "replace"), int(m.group(1)))
            else:
                self._buf = self._buf[-len(begin):]  # earlier commands' leftovers: keep only a marker cut in half
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestExecError(
                    f"guest command {command!r} did not finish within {timeout:.3g} s (it may still be running in "
                    "the guest; the next command starts after it)"
                )
            conn.settimeout(min(remaining, 0.5))
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if not self._alive():
                    self._drop()
                    raise GuestExecError(f"QEMU exited while {command!r} was running") from None
                continue
            if not chunk:
                self._drop()
                raise GuestExecError(f"QEMU closed the command channel while {command!r} was running")
            self._buf += chunk
