"""``connect(path)`` waits for a QEMU that is only starting; ``reconnect()`` connects first and swaps only on
success, so a failed reconnect never costs a working connection."""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Iterator

import pytest

import balloonlab
from balloonlab import BalloonDisconnectedError
from balloonlab.errors import NoBalloonDeviceError


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A private folder for a socket that does not exist yet (short: unix socket paths are limited), removed after."""
    with tempfile.TemporaryDirectory(prefix="balloonlab-sock-") as folder:
        yield folder


def test_connect_waits_for_a_socket_that_appears_within_its_timeout(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "qmp.sock")
    started: dict[str, Any] = {}
    connecting = threading.Event()

    def start_later() -> None:
        connecting.wait(10)
        started["emulator"] = balloonlab.emulate(socket_path=path)  # created while connect() is waiting

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        assert not os.path.exists(path)
        connecting.set()
        with balloonlab.connect(path, timeout=30) as lab:
            assert lab.connected and lab.stats() is not None
    finally:
        starter.join(30)
        if "emulator" in started:
            started["emulator"].close()


def test_connect_to_nothing_fails_after_its_timeout_with_the_reason(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "qmp.sock")
    with pytest.raises(BalloonDisconnectedError) as info:
        balloonlab.connect(path, timeout=0.5)
    assert f"cannot connect to the QMP socket {path}: [Errno 2] No such file or directory" in str(info.value)


def test_reconnect_swaps_to_a_new_connection_and_keeps_what_the_lab_knows() -> None:
    with balloonlab.emulate(clock="virtual") as lab:
        lab.polling_interval = 2
        updates: list[Any] = []
        lab.subscribe(updates.append)
        before = lab._client._qmp
        lab.reconnect()
        assert lab._client._qmp is not before and lab.connected
        assert lab.polling_interval == 2 and lab.stats() is not None
        assert not any(u.kind == "disconnected" for u in updates)  # the swap is not a disconnect


def test_a_failed_reconnect_keeps_the_working_connection() -> None:
    """On a socket that serves one client (real QEMU, or --single-client) the new connection gets no greeting
    while the lab's own is open: the reconnect fails, and the lab goes on working over the connection it had."""
    with balloonlab.emulate(clock="virtual", single_client=True) as lab:
        before = lab._client._qmp
        with pytest.raises(BalloonDisconnectedError) as info:
            lab.reconnect(timeout=1)
        assert "no QMP greeting within 1 s" in str(info.value)
        assert "The current connection is kept: it still works" in str(info.value)
        assert lab._client._qmp is before and lab.connected
        lab.polling_interval = 3
        assert lab.polling_interval == 3


@pytest.mark.qemu
def test_a_reconnect_that_fails_after_the_greeting_keeps_the_connection_and_what_it_knew(start_vm, tmp_path) -> None:
    """The new connection greets, then fails half-way through the basics (the socket's path now leads to a real
    QEMU without a balloon): the lab goes on over the connection it had, with the device it knew."""
    bare = start_vm(guest=False, balloon_id=None)
    path = str(tmp_path / "qmp.sock")
    with balloonlab.emulate(clock="virtual", socket_path=path) as lab:
        before, device, devices = lab._client._qmp, lab.device_path, list(lab._client.devices)
        os.replace(bare.qmp_socket, path)  # the lab's own connection is a file descriptor: it stays open
        with pytest.raises(NoBalloonDeviceError):
            lab.reconnect(timeout=5)
        assert lab.connected and lab._client._qmp is before
        assert lab.device_path == device and lab._client.devices == devices
        lab.polling_interval = 3
        assert lab.polling_interval == 3


def test_repr_says_connected_once() -> None:
    with balloonlab.emulate() as emulated, balloonlab.connect(emulated.socket_path) as connected:
        for lab in (emulated, connected):
            text = repr(lab)
            assert text.startswith(f"<Balloon {lab.backend} QEMU ") and text.count("connected") <= 1, text
    assert repr(connected) == f"<Balloon connected (closed) {connected.socket_path}>"
