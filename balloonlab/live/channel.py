"""The host end of the guest's command channel (the guest's second serial port, a unix socket on the host).

Protocol (the guest side is ``init.sh``): the host writes ``\\n@CMD@ TOKEN BASE64(command)\\n``; the guest runs the
command with ``sh`` and writes ``@BEGIN@ TOKEN\\n`` + output + ``\\n@END@ TOKEN STATUS\\n``.  Each command has a fresh
random token, so output of an earlier command that timed out on the host is recognised and skipped, and a
command's output can contain anything (it would have to print the token to confuse us).  Base64 keeps quotes,
newlines and non-ASCII in the command intact on a line-based channel.

Reading is linear in the output: each received chunk is searched only together with the few bytes before it a
marker could straddle, never the whole output again.  A command's output is kept up to :data:`MAX_OUTPUT` bytes;
beyond that the beginning is dropped (the tail is usually what matters: errors, the last lines), and the
result says so (``ExecResult.truncated`` and a first line naming how much was dropped), so a chatty command
cannot exhaust the host's memory.
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

#: The most output of one command kept on the host (its last bytes); see the module docstring.
MAX_OUTPUT = 16 * 2**20
_STATUS = re.compile(rb"(\d+)\n")
_DIGITS = re.compile(rb"\d*")


@dataclass(frozen=True)
class ExecResult:
    """What a guest command printed (stdout and stderr interleaved) and its exit status."""

    output: str
    exit_code: int
    #: True when the command printed more than the channel keeps: ``output`` is its tail, after a note line.
    truncated: bool = False


class CommandChannel:
    """One connection to the command socket, shared by all threads (one command at a time)."""

    def __init__(self, socket_path: Path, process_alive: Callable[[], bool], max_output: int = MAX_OUTPUT) -> None:
        self._path = socket_path
        self._alive = process_alive
        self._max_output = max_output
        self._conn: socket.socket | None = None
        self._buf = bytearray()
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
            self._conn, self._buf = conn, bytearray()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read_result(self, conn: socket.socket, token: bytes, deadline: float, command: str,
                     timeout: float) -> ExecResult:
        begin = b"@BEGIN@ " + token + b"\n"
        end = b"\n@END@ " + token + b" "  # then the status digits and a newline
        buf = self._buf
        in_output = False  # once the begin marker is seen, buf holds only this command's output (and after)
        scan = 0  # where the next search starts: earlier bytes hold no (start of a) marker
        dropped = 0  # bytes of output dropped from the front to stay within max_output
        while True:
            if not in_output:
                start = buf.find(begin, scan)
                if start >= 0:
                    del buf[:start + len(begin)]
                    in_output, scan = True, 0
                else:  # earlier commands' leftovers: keep only a marker cut in half
                    del buf[:max(0, len(buf) - len(begin) + 1)]
                    scan = 0
            if in_output:
                found = self._find_end(buf, end, scan)
                if isinstance(found, tuple):
                    return self._result(*found, dropped)
                scan = found
                excess = min(len(buf) - self._max_output, scan)  # never cut a marker under way
                if excess > self._max_output:  # trim in big steps: each byte is moved O(1) times
                    del buf[:excess]
                    scan -= excess
                    dropped += excess
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestExecError(
                    f"guest command {command!r} did not finish within {timeout:.3g} s (it may still be running in "
                    "the guest; the next command starts after it)"
                )
            conn.settimeout(min(remaining, 0.5))
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                if not self._alive():
                    self._drop()
                    raise GuestExecError(f"QEMU exited while {command!r} was running") from None
                continue
            if not chunk:
                self._drop()
                raise GuestExecError(f"QEMU closed the command channel while {command!r} was running")
            buf += chunk

    @staticmethod
    def _find_end(buf: bytearray, end: bytes, scan: int) -> tuple[bytes, int] | int:
        """``(output, status)`` if ``buf`` (a command's output from its start) holds the end marker and status
        (their bytes are consumed from ``buf``), else where to search again once more bytes came (a marker may
        be cut at the end of ``buf``)."""
        while True:
            at = buf.find(end, scan)
            if at < 0:
                return max(0, len(buf) - len(end) + 1)
            m = _STATUS.match(buf, at + len(end))
            if m:
                output, status = bytes(buf[:at]), int(m.group(1))
                del buf[:m.end()]  # (m reads buf: take what it found first)
                return output, status
            if _DIGITS.fullmatch(buf, at + len(end)):
                return at  # the status is still arriving
            scan = at + 1  # the marker text inside the output, not followed by a status: keep looking

    def _result(self, output: bytes, status: int, dropped: int) -> ExecResult:
        """The result, its output cut to its last ``max_output`` bytes (with a note saying so) if longer."""
        if len(output) > self._max_output:
            dropped += len(output) - self._max_output
            output = output[-self._max_output:]
        text = output.decode("utf-8", "replace")
        if not dropped:
            return ExecResult(text, status)
        note = (f"[balloonlab: output truncated: the first {dropped} bytes were dropped, the last {len(output)} "
                "bytes follow]\n")
        return ExecResult(note + text, status, truncated=True)
