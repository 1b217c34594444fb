"""``--single-client`` / ``emulate(single_client=True)``: one QMP client per socket, as real QEMU serves it.

Observed on QEMU 7.2 (and checked again here against it): while one client is connected, a second one's
``connect()`` succeeds (the kernel queues it in the listen backlog) but no greeting comes; when the first leaves,
QEMU greets the second and answers what it had already sent.  The same two clients -- qmp-shell, and a second
lab -- are run against the emulator in that mode and against a real QEMU, and must see the same.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from typing import Iterator

import pytest

import balloonlab
from balloonlab import BalloonDisconnectedError
from tests.fixtures.qemu import qemu_binary, start_vm  # noqa: F401  (fixtures)
from tests.helpers import emulate_command

#: How long a waiting client is given to (wrongly) receive a greeting: the same bound the differential
#: conversation "one client at a time" uses; a greeting, when it is sent, arrives within microseconds.
NO_GREETING_WAIT = 1.0
QMP_SHELL = os.path.join(os.path.dirname(sys.executable), "qmp-shell")


def greeted_within(path: str, wait: float) -> tuple[socket.socket, bool]:
    """Connect a raw client; True when QEMU's greeting arrives within ``wait`` seconds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock, bool(select.select([sock], [], [], wait)[0]) and bool(sock.recv(65536))


@pytest.fixture()
def emulated_socket() -> Iterator[str]:
    """``balloonlab emulate --single-client`` in a subprocess; its QMP socket path."""
    with emulate_command("--single-client") as path:
        yield path


@pytest.fixture()
def live_socket(start_vm) -> str:
    return str(start_vm(guest=False, memory="256M").qmp_socket)


def second_lab_is_refused(path: str) -> str:
    with pytest.raises(BalloonDisconnectedError) as info:
        balloonlab.connect(path, timeout=NO_GREETING_WAIT)
    return str(info.value)


def one_client_at_a_time(path: str) -> dict:
    """What qmp-shell and a second lab see while a lab holds the socket, then after it closes."""
    seen: dict = {}
    lab = balloonlab.connect(path)
    shell = None
    try:
        shell = subprocess.Popen([QMP_SHELL, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        assert shell.stdin is not None
        shell.stdin.write("query-status\n")
        shell.stdin.flush()
        # The second lab gives up, but its connection stays queued (before or after qmp-shell's) until accepted.
        seen["second lab"] = second_lab_is_refused(path).replace(path, "SOCKET")
        seen["qmp-shell still waiting"] = shell.poll() is None
        assert lab.stats() is not None  # the lab that holds the socket is served throughout
        lab.close()
        out, _ = shell.communicate(timeout=30)
        seen["qmp-shell after the lab closed"] = [line for line in out.splitlines() if line.startswith("(QEMU) {")]
    finally:
        lab.close()
        if shell is not None and shell.poll() is None:
            shell.kill()
            shell.wait()
    with balloonlab.connect(path) as again:  # the socket is free again
        seen["a new lab connects"] = again.connected
    return seen


def expected(running: str) -> dict:
    return {
        "second lab": ("cannot connect to the QMP socket SOCKET: no QMP greeting within 1 s. Is QEMU (or "
                       "`balloonlab emulate`) running with -qmp unix:PATH,server=on,wait=off, and is nobody else "
                       "holding the socket's only connection?"),
        "qmp-shell still waiting": True,
        "qmp-shell after the lab closed": [f'(QEMU) {{"return": {running}}}'],
        "a new lab connects": True,
    }


def test_single_client_emulator_serves_one_client_as_qemu_does(emulated_socket):
    assert one_client_at_a_time(emulated_socket) == expected('{"status": "running", "running": true}')


@pytest.mark.qemu
def test_real_qemu_serves_one_client_per_socket_the_same_way(live_socket):
    assert one_client_at_a_time(live_socket) == expected(
        '{"status": "running", "singlestep": false, "running": true}')


def full_queue(path: str) -> dict:
    """QEMU listens with a backlog of 1, which Linux takes as two waiting connections: a third is refused."""
    with balloonlab.connect(path):
        waiting = [greeted_within(path, 0)[0] for _ in range(2)]
        try:
            third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            third.setblocking(False)
            with third, pytest.raises(BlockingIOError):
                third.connect(path)
            return {"lab": second_lab_is_refused(path).replace(path, "SOCKET")}
        finally:
            for sock in waiting:
                sock.close()


FULL = {"lab": ("cannot connect to the QMP socket SOCKET: its queue of waiting connections is full. Is QEMU (or "
                "`balloonlab emulate`) running with -qmp unix:PATH,server=on,wait=off, and is nobody else holding "
                "the socket's only connection?")}


def test_single_client_emulator_queues_two_and_refuses_more_as_qemu(emulated_socket):
    assert full_queue(emulated_socket) == FULL


@pytest.mark.qemu
def test_real_qemu_queues_two_and_refuses_more(live_socket):
    assert full_queue(live_socket) == FULL


def test_by_default_the_emulator_serves_several_clients_at_once():
    with balloonlab.emulate() as lab:
        raw, greeted = greeted_within(lab.socket_path, NO_GREETING_WAIT)
        raw.close()
        assert greeted
        with balloonlab.connect(lab.socket_path) as second:
            assert second.actual == lab.actual


def test_emulate_single_client_keeps_the_socket_for_the_lab():
    with balloonlab.emulate(single_client=True) as lab:
        raw, greeted = greeted_within(lab.socket_path, NO_GREETING_WAIT)
        try:
            assert not greeted
            assert lab.polling_interval == 0  # the lab, which holds the socket, is served meanwhile
        finally:
            raw.close()
        assert "nobody else holding the socket's only connection" in second_lab_is_refused(lab.socket_path)


def test_a_failed_accept_does_not_stop_a_single_client_emulator(tmp_path):
    import resource

    from tests.helpers import balloonlab_process

    path = str(tmp_path / "qmp.sock")
    with balloonlab_process("emulate", "--single-client", "-qmp", f"unix:{path},server=on,wait=off") as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == path
        soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
        in_use = len(os.listdir(f"/proc/{proc.pid}/fd"))
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (in_use, hard))  # the next accept fails: EMFILE
        client, greeted = greeted_within(path, NO_GREETING_WAIT)
        with client:
            assert not greeted
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
            assert select.select([client], [], [], 10)[0], "no greeting once descriptors were free again"
            assert client.recv(65536).startswith(b'{"QMP"')
        assert proc.poll() is None
