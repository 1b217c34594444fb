"""The command channel's framing, against a peer on a real unix socket that speaks the guest's side (init.sh).

A peer rather than the real guest: these cases need output split at every byte, markers inside the output and
more output than the channel keeps, and megabytes through the guest's emulated UART would take minutes under
TCG (tests/test_live_vm.py runs real commands in the real guest).
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from balloonlab.errors import GuestExecError
from balloonlab.live.channel import CommandChannel


class Peer:
    """Accepts one connection; for each command line received, sends what ``reply(token, command)`` returns, in
    pieces of ``piece`` bytes."""

    def __init__(self, path: Path, reply: Callable[[bytes, str], bytes], piece: int = 65536) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.reply, self.piece = reply, piece
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                if not line.startswith(b"@CMD@ "):
                    continue
                _, token, encoded = line.split()
                data = self.reply(token, base64.b64decode(encoded).decode())
                for i in range(0, len(data), self.piece):
                    conn.sendall(data[i:i + self.piece])

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


@pytest.fixture
def channel(tmp_path):
    made = []

    def make(reply, piece=65536, max_output=1 << 20):
        peer = Peer(tmp_path / "cmd.sock", reply, piece)
        chan = CommandChannel(tmp_path / "cmd.sock", lambda: True, max_output=max_output)
        made.append((chan, peer))
        return chan

    yield make
    for chan, peer in made:
        chan.close()
        peer.close()


def framed(token: bytes, output: bytes, status: int = 0) -> bytes:
    return b"@BEGIN@ " + token + b"\n" + output + b"\n@END@ " + token + b" %d\n" % status


def test_markers_split_at_every_byte(channel) -> None:
    chan = channel(lambda token, cmd: b"noise @BEGIN@ 0000\n" + framed(token, cmd.encode() + b"\nline 2", 3),
                   piece=1)
    result = chan.run("echo hi", timeout=30)
    assert (result.output, result.exit_code, result.truncated) == ("echo hi\nline 2", 3, False)


def test_end_marker_text_without_a_status_is_output(channel) -> None:
    def reply(token, cmd):
        tricky = b"a\n@END@ " + token + b" x\n@END@ " + token + b" \nb"
        return framed(b"stale", b"old") + framed(token, tricky, 7)

    result = channel(reply, piece=3).run("x", timeout=30)
    assert result.exit_code == 7
    assert result.output.endswith(" \nb") and result.output.startswith("a\n@END@ ")


def test_second_command_after_leftovers(channel) -> None:
    chan = channel(lambda token, cmd: framed(token, cmd.encode()) + b"trailing junk", piece=5)
    assert chan.run("one", timeout=30).output == "one"
    assert chan.run("two", timeout=30).output == "two"


def test_output_beyond_the_cap_keeps_the_tail_and_says_so(channel) -> None:
    body = b"".join(b"%07d\n" % i for i in range(20000))  # 160 000 bytes
    chan = channel(lambda token, cmd: framed(token, body, 1), piece=4096, max_output=10000)
    result = chan.run("big", timeout=30)
    assert result.truncated and result.exit_code == 1
    note, _, tail = result.output.partition("\n")
    assert tail.encode() == body[-10000:]
    assert note == f"[balloonlab: output truncated: the first {len(body) - 10000} bytes were dropped, the last " \
                   "10000 bytes follow]"
    assert chan.run("again", timeout=30) == result  # the channel stays in step


def test_an_unfinished_command_times_out(channel) -> None:
    chan = channel(lambda token, cmd: b"@BEGIN@ " + token + b"\npartial")
    with pytest.raises(GuestExecError, match="did not finish within 1 s"):
        chan.run("hang", timeout=1)
