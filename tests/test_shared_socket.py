"""``connect(path, exclusive=False)`` against real QEMU: the socket is free between calls, as a manager needs it.

QEMU serves one client per QMP socket.  These tests show what that means for a second client (the VM's manager,
here a plain ``qemu.qmp`` client or a raw socket): with the default lab it gets no greeting while the lab is
connected; with ``exclusive=False`` it works between the lab's calls, and the lab waits its turn while the
manager holds the socket.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import balloonlab
from balloonlab.errors import BalloonDisconnectedError
from balloonlab.client import loop as _loop
from tests.fixtures.qemu import qmp_run
from tests.helpers import clean_loop, wait_until  # noqa: F401  (clean_loop: autouse)

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def _greeting_within(path: str, timeout: float) -> bool:
    """Whether a new client on ``path`` gets QEMU's greeting within ``timeout`` s."""
    async def probe() -> bool:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
            return b'"QMP"' in line
        except asyncio.TimeoutError:
            return False
        finally:
            writer.close()
            await writer.wait_closed()

    return asyncio.run(probe())


@pytest.fixture
def vm(live_vm):
    yield live_vm
    qmp_run(str(live_vm.qmp_socket), ("qom-set", {"path": "/machine/peripheral/balloon0",
                                                  "property": "guest-stats-polling-interval", "value": 0}))


def test_a_held_connection_locks_a_second_client_out(vm):
    lab = balloonlab.connect(str(vm.qmp_socket))
    try:
        assert lab.exclusive
        assert not _greeting_within(str(vm.qmp_socket), 1.0)  # connected at the socket level, but no greeting
    finally:
        lab.close()
    assert _greeting_within(str(vm.qmp_socket), 5.0)


def test_a_shared_lab_leaves_the_socket_to_a_second_client_between_its_calls(vm):
    path = str(vm.qmp_socket)
    lab = balloonlab.connect(path, exclusive=False)
    try:
        assert not lab.exclusive
        assert lab.device_path == "/machine/peripheral/balloon0"
        lab.polling_interval = 2
        # The manager works between balloonlab's calls, and each side sees the other's change.
        assert qmp_run(path, ("qom-get", {"path": lab.device_path,
                                          "property": "guest-stats-polling-interval"})) == [2]
        qmp_run(path, ("qom-set", {"path": lab.device_path, "property": "guest-stats-polling-interval",
                                   "value": 3}))
        assert lab.polling_interval == 3
        assert wait_until(lambda: lab.stats().last_update is not None, timeout=30)
        assert _greeting_within(path, 5.0)
        assert lab.actual == 512 * 1024 * 1024
    finally:
        lab.close()


def test_a_shared_lab_waits_while_the_manager_holds_the_socket_then_works(vm):
    path = str(vm.qmp_socket)
    lab = balloonlab.connect(path, exclusive=False, timeout=2)
    try:
        manager = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        manager.connect(path)
        try:
            assert b'"QMP"' in manager.recv(4096)  # QEMU now serves the manager
            with pytest.raises(BalloonDisconnectedError, match="holds the socket"):
                _ = lab.polling_interval
        finally:
            manager.close()
        assert lab.polling_interval == 0
        assert lab.connected
    finally:
        lab.close()


def _held_by_a_manager(path: str) -> socket.socket:
    """A second client that QEMU now serves (it has the greeting): the lab waits its turn until it closes."""
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    manager.connect(path)
    assert b'"QMP"' in manager.recv(4096)
    return manager


def test_a_failed_reconnect_keeps_a_working_shared_lab(vm):
    path = str(vm.qmp_socket)
    lab = balloonlab.connect(path, exclusive=False, timeout=2)
    try:
        lab.polling_interval = 2
        manager = _held_by_a_manager(path)
        try:
            with pytest.raises(BalloonDisconnectedError, match="holds the socket"):
                lab.reconnect(timeout=1)
            assert lab.connected
        finally:
            manager.close()
        assert lab.polling_interval == 2
    finally:
        lab.close()


def test_a_disconnect_while_a_shared_call_waits_ends_that_call_cleanly(vm):
    """The call holds the lab's turn while it waits for the greeting; the disconnect meanwhile replaces the turn.
    The call must end as a disconnected call (not an error of balloonlab's own) and release what it took."""
    path = str(vm.qmp_socket)
    lab = balloonlab.connect(path, exclusive=False, timeout=10)
    client = lab._client
    try:
        manager = _held_by_a_manager(path)
        try:
            turn = client._turn
            call = _loop.submit(client.execute("query-status"))
            assert wait_until(lambda: turn.locked(), timeout=10)
            _loop.run(client.disconnect(), 10)
        finally:
            manager.close()
        with pytest.raises(BalloonDisconnectedError):
            call.result(timeout=20)
        assert not turn.locked()
        lab.reconnect(timeout=5)
        assert lab.polling_interval == 0
    finally:
        lab.close()


def test_a_shared_lab_whose_socket_is_gone_says_so(tmp_path, start_vm):
    vm = start_vm()
    lab = balloonlab.connect(str(vm.qmp_socket), exclusive=False, timeout=2)
    try:
        vm.stop()
        with pytest.raises(BalloonDisconnectedError, match="gone"):
            lab.stats()
        assert not lab.connected
    finally:
        lab.close()


def test_the_panel_and_the_watch_say_that_a_shared_lab_polls(vm):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from balloonlab.magics.watch import StatsWatch
    from balloonlab.widgets import BalloonPanel

    lab = balloonlab.connect(str(vm.qmp_socket), exclusive=False)
    panel = BalloonPanel(lab)
    try:
        assert panel.status.startswith("polling: the QMP socket is shared (exclusive=False)")
        shell = InteractiveShell.instance()
        with capture_output():  # IPython's capturing publisher: it can update a display, as a kernel does
            watch = StatsWatch(lab, shell).start()
            try:
                assert "polling the shared QMP socket (exclusive=False)" in watch.view().headline()
            finally:
                watch.stop()
    finally:
        panel.close()
        lab.close()


def test_balloon_connect_shared_makes_a_lab_that_releases_the_socket(vm):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "balloonlab")
    try:
        lab = shell.run_line_magic("balloon", f"connect --shared {vm.qmp_socket}")
        assert lab.exclusive is False
        assert _greeting_within(str(vm.qmp_socket), 5.0)  # the socket is free between the magic's calls
    finally:
        shell.run_line_magic("unload_ext", "balloonlab")
    assert lab.closed
