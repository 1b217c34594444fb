"""The client against a real QEMU 7.2 with no guest: discovery, errors word for word, events, a dying QEMU.

These are the parts of the client that need no guest kernel (QEMU answers QMP; nothing ever reports), so they
run against the real thing in a fraction of a second each.  The whole API with guests is in test_api.py.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

import balloonlab
from balloonlab.errors import BalloonDisconnectedError, NoBalloonDeviceError, QMPError
from tests.helpers import clean_loop, process_gone, wait_until  # noqa: F401  (clean_loop: autouse fixture)

pytestmark = pytest.mark.qemu


def test_connect_to_nothing_says_what_to_check(tmp_path):
    with pytest.raises(BalloonDisconnectedError, match="server=on,wait=off"):
        balloonlab.connect(str(tmp_path / "nope.sock"))


def test_discovery_with_and_without_id(start_vm):
    named = start_vm(guest=False, paused=True)
    with balloonlab.connect(named.qmp_socket) as lab:
        assert lab.device_path == "/machine/peripheral/balloon0"
        assert lab.backend == "connected"
        assert lab.qemu_version and lab.qemu_version == named.qemu_version
    anon = start_vm(guest=False, paused=True, balloon_id="")
    with balloonlab.connect(anon.qmp_socket) as lab:
        assert lab.device_path == "/machine/peripheral-anon/device[0]"


def test_no_balloon_device_says_how_to_add_one(start_vm):
    vm = start_vm(guest=False, paused=True, balloon_id=None)
    with pytest.raises(NoBalloonDeviceError, match="-device virtio-balloon-pci"):
        balloonlab.connect(vm.qmp_socket)


def test_explicit_device_path_is_checked(start_vm):
    vm = start_vm(guest=False, paused=True)
    with pytest.raises(NoBalloonDeviceError, match="not a virtio-balloon"):
        balloonlab.connect(vm.qmp_socket, device_path="/machine/peripheral-anon")
    with balloonlab.connect(vm.qmp_socket, device_path="/machine/peripheral/balloon0") as lab:
        assert lab.devices == ["/machine/peripheral/balloon0"]


def test_qemu_errors_come_back_verbatim(start_vm):
    vm = start_vm(guest=False, paused=True)
    with balloonlab.connect(vm.qmp_socket) as lab:
        with pytest.raises(QMPError) as err:
            lab.qmp("no-such-command")
        assert (err.value.error_class, err.value.desc) == (
            "CommandNotFound", "The command no-such-command has not been found")
        with pytest.raises(QMPError) as err:
            lab.qmp("qom-get", path="/machine/peripheral/nope", property="type")
        assert (err.value.error_class, err.value.desc) == (
            "DeviceNotFound", "Device '/machine/peripheral/nope' not found")
        with pytest.raises(QMPError) as err:
            lab.qmp("qom-set", {"path": lab.device_path, "property": "stats-polling-interval", "value": 2})
        assert err.value.desc == "Property 'virtio-balloon-pci.stats-polling-interval' not found"
        # the connection stays usable after errors
        assert lab.polling_interval == 0


def test_paused_vm_without_guest(start_vm):
    vm = start_vm(guest=False, paused=True)
    with balloonlab.connect(vm.qmp_socket) as lab:
        s = lab.stats()
        assert s.last_update is None and len(s.unset) == len(s) == 10
        assert lab.doctor().verdict == "paused"
        lab.polling_interval = 1
        assert lab.doctor().verdict == "paused"
        lab.qmp("cont")
        assert lab.running
        assert lab.doctor().verdict == "never-reported"
        assert [e["event"] for e in lab.events] == ["RESUME"]


def test_events_reach_subscribers_on_the_background_thread(start_vm):
    vm = start_vm(guest=False, paused=True)
    with balloonlab.connect(vm.qmp_socket, history=False) as lab:  # only the subscriber keeps the follower up
        got, threads = [], set()

        def callback(update):
            got.append(update)
            threads.add(threading.current_thread().name)

        unsubscribe = lab.subscribe(callback)
        assert wait_until(lambda: lab.following, 10)
        lab.qmp("cont")
        lab.qmp("stop")
        assert wait_until(lambda: [u.event["event"] for u in got if u.kind == "event"] == ["RESUME", "STOP"], 10)
        lab.polling_interval = 5
        assert wait_until(lambda: any(u.kind == "interval" and u.interval == 5 for u in got), 10)
        assert threads == {"balloonlab-loop"}
        unsubscribe()
        unsubscribe()  # idempotent
        assert wait_until(lambda: not lab.following, 10)


def test_sigkill_gives_disconnected_update_then_error(start_vm):
    vm = start_vm(guest=False)
    lab = balloonlab.connect(vm.qmp_socket, timeout=30)
    try:
        updates = []
        lab.subscribe(updates.append)
        os.kill(vm.pid, signal.SIGKILL)
        assert wait_until(lambda: any(u.kind == "disconnected" for u in updates), 10)
        gone = [u for u in updates if u.kind == "disconnected"]
        assert len(gone) == 1 and "reconnect" in gone[0].error
        assert not lab.connected
        with pytest.raises(BalloonDisconnectedError, match="lost the QMP connection"):
            lab.stats()
        with pytest.raises(BalloonDisconnectedError):
            lab.polling_interval = 2
        with pytest.raises(BalloonDisconnectedError):
            lab.reconnect(timeout=1)
        assert wait_until(lambda: not lab.following, 10)
    finally:
        lab.close()
    lab.close()
    with pytest.raises(BalloonDisconnectedError, match="closed"):
        lab.stats()
    assert wait_until(lambda: process_gone(vm.pid), 10)


def test_history_records_while_enabled(start_vm):
    vm = start_vm(guest=False)
    with balloonlab.connect(vm.qmp_socket, history=True) as lab:
        assert wait_until(lambda: lab.following, 10)
        assert wait_until(lambda: len(lab.history) >= 1, 10)
        lab.set_target("64M")
        lab.history.enabled = False
        assert wait_until(lambda: not lab.following, 10)
        row = lab.history.rows()[0]
        assert row["actual"] == lab.ram_size == 512 << 20 and row["interval"] == 0


def test_a_socket_held_by_another_client_fails_with_advice(start_vm):
    import socket

    vm = start_vm(guest=False, paused=True)
    holder = socket.socket(socket.AF_UNIX)
    try:
        holder.connect(vm.qmp_socket)
        assert holder.recv(4096).startswith(b'{"QMP"')  # QEMU greets its one client...
        with pytest.raises(BalloonDisconnectedError, match="nobody else"):  # ...and keeps the next one waiting
            balloonlab.connect(vm.qmp_socket, timeout=1)
    finally:
        holder.close()
    with balloonlab.connect(vm.qmp_socket) as lab:  # free again
        assert lab.polling_interval == 0
