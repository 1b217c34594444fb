"""What a lab says and does when QEMU (or the emulator, or the guest) misbehaves under it.

The faults: QEMU or `balloonlab emulate` SIGKILLed mid-watch (and the emulator restarted on the same socket), a
server frozen with SIGSTOP, the QMP socket file removed, a guest that stops answering (and the buggy guest), a VM
paused for a (virtual) day.  Each test breaks something under a connected lab and checks three things: a clear
report (a "disconnected" update, a BalloonDisconnectedError that names the socket and says what to do, a doctor
verdict), no hang and no exception in any event loop (balloonlab's background loop records every exception its
handler sees, and the ``no_loop_errors`` fixture fails the test on a new one or on an ERROR logged by balloonlab
itself), and a way back (reconnect, cont, start-answering, a reset) or a clean close that leaves no process and no
file.

The magics side of a dead QEMU (``%balloon stats`` is one line) is tested in tests/test_magics.py
(``test_a_dead_qemu_gives_one_line``) and in a real kernel in tests/test_magics_kernel.py; not repeated here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import balloonlab
from balloonlab.client import loop as _loop
from balloonlab.errors import BalloonDisconnectedError
from tests.fixtures.qemu import process_gone, wait_until

#: Generous bound for "noticed at once" waits (a loaded CI machine); no test asserts on elapsed time.
NOTICE = 10.0


@pytest.fixture(autouse=True)
def no_loop_errors(caplog) -> Iterator[None]:
    """Fail the test if balloonlab's background loop saw an unhandled exception or balloonlab logged an ERROR."""
    before = len(_loop.loop_errors())
    caplog.set_level(logging.WARNING, logger="balloonlab")
    yield
    new = _loop.loop_errors()[before:]
    assert new == [], f"exceptions reached balloonlab's event loop: {[c.get('message') for c in new]}"
    # "balloonlab.qmp" is qemu.qmp's own protocol log (it logs the lost connection we caused at ERROR).
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR
              and r.name.startswith("balloonlab") and r.name != "balloonlab.qmp"]
    assert errors == [], "balloonlab logged errors: " + "; ".join(r.getMessage() for r in errors)


def collect(lab: Any) -> tuple[list, Callable[[], None]]:
    updates: list = []
    return updates, lab.subscribe(updates.append)


def kinds(updates: list, kind: str) -> list:
    return [u for u in list(updates) if u.kind == kind]


def assert_lost_connection(call: Callable[[], Any], socket_path: str) -> BalloonDisconnectedError:
    """``call`` raises BalloonDisconnectedError because the connection is gone -- not because a command timed out
    (the labs here have a 30 s command timeout, so a hang would show as the other message)."""
    with pytest.raises(BalloonDisconnectedError) as info:
        call()
    text = str(info.value)
    assert "did not answer" not in text and "no answer" not in text, text
    assert socket_path in text and "reconnect" in text, text
    return info.value


# -- an external emulator (`balloonlab emulate`), killed and restarted --------------------------------------------
class EmulatorProcess:
    """``balloonlab emulate`` on a fixed socket path, in its own process (so it can be SIGKILLed)."""

    def __init__(self, socket_path: str, *args: str) -> None:
        self.socket_path = socket_path
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.stderr = b""

    def start(self) -> "EmulatorProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "balloonlab", "emulate", "-qmp", f"unix:{self.socket_path},server=on,wait=off",
             "-device", "virtio-balloon-pci,id=balloon0", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = self.proc
        # It prints nothing we need; the socket accepting connections is the signal.
        assert wait_until(lambda: proc.poll() is not None or self._accepts(), 30), "emulator did not start"
        assert proc.poll() is None, proc.stderr.read().decode()
        return self

    def _accepts(self) -> bool:
        import socket

        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.stderr += self.proc.stderr.read()
        self.proc.stderr.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


@pytest.fixture
def emulator_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="balloonlab-faults-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def external_emulator(emulator_dir) -> Iterator[Callable[..., EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    def start(*args: str) -> EmulatorProcess:
        emu = EmulatorProcess(str(emulator_dir / "qmp.sock"), *args).start()
        started.append(emu)
        return emu

    try:
        yield start
    finally:
        for emu in started:
            emu.stop()
        for emu in started:
            assert b"Traceback" not in emu.stderr, emu.stderr.decode(errors="replace")


def test_emulator_killed_mid_watch_then_restarted_on_the_same_socket(external_emulator):
    emu = external_emulator("--clock", "virtual")
    lab = balloonlab.connect(emu.socket_path, timeout=30)
    try:
        lab.polling_interval = 1
        updates, unsubscribe = collect(lab)
        lab.advance("3s")
        assert wait_until(lambda: kinds(updates, "stats"), NOTICE), "the watcher saw no stats before the kill"

        emu.kill(signal.SIGKILL)  # no cleanup runs: the socket file stays behind, stale
        assert wait_until(lambda: kinds(updates, "disconnected"), NOTICE), "no 'disconnected' update"
        gone = kinds(updates, "disconnected")
        assert len(gone) == 1 and "reconnect" in gone[0].error
        assert not lab.connected
        assert_lost_connection(lab.stats, emu.socket_path)
        assert_lost_connection(lambda: setattr(lab, "polling_interval", 2), emu.socket_path)
        assert wait_until(lambda: not lab.following, NOTICE)
        with pytest.raises(BalloonDisconnectedError, match="cannot connect"):
            lab.reconnect(timeout=2)  # nobody listens on the stale socket yet

        # The way back: a new emulator on the same path (it replaces the stale socket), then reconnect().
        emu2 = external_emulator("--clock", "virtual")
        lab.reconnect()
        assert lab.connected and lab.device_path == "/machine/peripheral/balloon0"
        assert lab.polling_interval == 0  # a new VM: polling is off again, as after a QEMU restart
        lab.polling_interval = 1
        seen = len(kinds(updates, "stats"))
        lab.advance("2s")
        assert wait_until(lambda: len(kinds(updates, "stats")) > seen, NOTICE), "subscription did not carry over"
        assert lab.doctor().verdict == "healthy"
        unsubscribe()
    finally:
        lab.close()
    emu2.stop()
    assert not Path(emu.socket_path).exists()


def test_emulator_stopped_cleanly_then_restarted(external_emulator):
    """SIGTERM: the emulator removes its socket; the lab says so, and reconnects once a new one is there."""
    emu = external_emulator()
    with balloonlab.connect(emu.socket_path, timeout=30) as lab:
        updates, _ = collect(lab)
        emu.kill(signal.SIGTERM)
        assert wait_until(lambda: kinds(updates, "disconnected"), NOTICE)
        assert not Path(emu.socket_path).exists()
        assert_lost_connection(lab.stats, emu.socket_path)
        external_emulator()
        lab.reconnect()
        assert lab.connected and lab.polling_interval == 0
        assert set(lab.stats()) >= {"free-memory", "total-memory"}
        assert not kinds(updates, "disconnected")[1:], "reconnect() must not report another disconnection"


def test_emulator_frozen_with_sigstop_then_thawed(external_emulator):
    """A QMP server that stops answering (SIGSTOP): the call gives up after the lab's timeout with a message
    that says so, and once the server runs again (SIGCONT) the same connection works without a reconnect."""
    emu = external_emulator()
    with balloonlab.connect(emu.socket_path, timeout=1) as lab:
        os.kill(emu.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BalloonDisconnectedError, match="did not answer 'qom-get'"):
                lab.stats()
        finally:
            os.kill(emu.proc.pid, signal.SIGCONT)
        assert wait_until(lambda: lab.connected, NOTICE)
        assert lab.polling_interval == 0  # the late reply to the abandoned command was dropped, not mistaken
        assert set(lab.stats()) >= {"free-memory"}


def test_live_updates_survive_a_server_that_was_frozen_for_longer_than_the_timeout(external_emulator):
    """The watcher's reads time out while QEMU is stopped; once it runs again, subscribers hear new reports
    without anyone reconnecting or subscribing again."""
    emu = external_emulator()
    with balloonlab.connect(emu.socket_path, timeout=1) as lab:
        updates: list = []
        lab.subscribe(updates.append)
        lab.polling_interval = 1
        assert wait_until(lambda: kinds(updates, "stats"), NOTICE), "no stats update before the freeze"
        os.kill(emu.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)  # longer than the 1 s command timeout: nothing to poll for while a process is stopped
        finally:
            os.kill(emu.proc.pid, signal.SIGCONT)
        seen = len(kinds(updates, "stats"))
        assert wait_until(lambda: len(kinds(updates, "stats")) > seen, 10), "live updates stopped for good"
        assert lab.following and lab.connected and not kinds(updates, "disconnected")


# -- the QMP socket file removed under a connected lab -------------------------------------------------------------
def check_socket_removed(lab: Any) -> None:
    path = lab.socket_path
    os.unlink(path)
    # The connection is a file descriptor, not the path: the lab keeps working.
    assert lab.stats() is not None
    lab.polling_interval = 3
    assert lab.polling_interval == 3
    assert lab.doctor().verdict
    # A reconnect needs the path; it fails with a message naming it, and keeps the connection that still works.
    with pytest.raises(BalloonDisconnectedError) as info:
        lab.reconnect(timeout=2)
    assert path in str(info.value) and "cannot connect" in str(info.value)
    assert "connection is kept" in str(info.value)
    assert lab.connected
    assert lab.stats() is not None


def test_socket_removed_under_an_emulated_lab():
    lab = balloonlab.emulate(timeout=30)
    private_dir = Path(lab.socket_path).parent
    try:
        check_socket_removed(lab)
    finally:
        lab.close()
    assert not private_dir.exists(), "close() left the emulator's private directory behind"


@pytest.mark.qemu
def test_socket_removed_under_a_live_lab(qemu_binary):
    lab = balloonlab.launch(guest=False, timeout=30)
    pid, workdir = lab.vm.pid, Path(lab.socket_path).parent
    try:
        check_socket_removed(lab)
    finally:
        lab.close()
    assert process_gone(pid) and not Path(f"/proc/{pid}").exists(), "QEMU still runs (or is an unreaped zombie)"
    assert not workdir.exists()


# -- QEMU SIGKILLed mid-watch ------------------------------------------------------------------------------------
@pytest.mark.qemu
def test_qemu_sigkilled_mid_watch(guest_image):
    lab = balloonlab.launch(image=guest_image, timeout=30)
    pid, workdir = lab.vm.pid, Path(lab.socket_path).parent
    try:
        lab.polling_interval = 1
        updates, _ = collect(lab)
        first = lab.stats().last_update
        assert wait_until(lambda: any(u.stats.last_update != first for u in kinds(updates, "stats")), 30), \
            "the watcher saw no fresh report before the kill"
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: kinds(updates, "disconnected"), NOTICE), "no 'disconnected' update"
        assert len(kinds(updates, "disconnected")) == 1
        # the lab started this QEMU: it names the real cause instead of the socket it lost
        said = f"the QEMU this lab started (pid {pid}) was killed by SIGKILL; start a new one with balloonlab.launch()"
        assert kinds(updates, "disconnected")[0].error == said
        for call in (lab.stats, lab.doctor):
            with pytest.raises(BalloonDisconnectedError) as info:
                call()
            assert str(info.value) == said
        with pytest.raises(BalloonDisconnectedError):
            lab.reconnect(timeout=1)
    finally:
        lab.close()
    assert not Path(f"/proc/{pid}").exists(), "close() did not reap the killed QEMU"
    assert not workdir.exists(), "close() left the VM's work directory behind"


# -- a guest that stops answering ----------------------------------------------------------------------------------
def requests_since(lab: Any, since: int) -> int:
    return sum(1 for x in lab.trace(since)["exchanges"] if x["kind"] == "request")


def test_guest_stops_answering_then_starts_again():
    with balloonlab.emulate(clock="virtual", timeout=30) as lab:
        lab.polling_interval = 1
        lab.advance("5s")
        assert lab.doctor().verdict == "healthy"
        lab.guest("stop-answering")
        mark = lab.trace()["next"]
        frozen = lab.stats().last_update
        lab.advance("60s")
        assert lab.stats().last_update == frozen
        diagnosis = lab.doctor()
        assert diagnosis.verdict == "stale" and diagnosis.severity == "error", diagnosis
        # QEMU's rule: the timer is re-armed only by an answer. One request went out; the guest kept the buffer.
        assert requests_since(lab, mark) == 1
        assert lab.trace()["holder"] == "guest"
        lab.polling_interval = 5  # changing the interval does not bring it back while the guest holds the buffer
        lab.advance("30s")
        assert lab.stats().last_update == frozen and requests_since(lab, mark) == 1
        # The way back: the guest answers the request it holds, which re-arms the timer.
        lab.guest("start-answering")
        lab.advance("11s")
        assert lab.stats().last_update > frozen
        assert requests_since(lab, mark) >= 3
        assert lab.doctor().verdict == "healthy"


def test_buggy_guest_goes_stale_and_a_reset_brings_one_report_back():
    with balloonlab.emulate(guest="buggy", clock="virtual", timeout=30) as lab:
        lab.polling_interval = 2
        lab.advance("2m")
        assert lab.doctor().verdict == "stale"
        mark = lab.trace()["next"]
        lab.advance("10m")
        # What this can see: no request while the guest holds the only buffer.  Whether the timer is armed it
        # cannot see (an armed timer that finds no buffer sends nothing either); the device tests check that.
        assert requests_since(lab, mark) == 0, "a request went out while the guest held the only stats buffer"
        stale = lab.stats().last_update
        lab.qmp("system_reset")  # virtio reset: the rebooted driver parks a fresh report
        lab.advance("3s")
        assert lab.stats().last_update > stale


# -- a VM paused for long --------------------------------------------------------------------------------------
def test_emulated_vm_paused_for_a_day():
    with balloonlab.emulate(clock="virtual", timeout=30) as lab:
        lab.polling_interval = 1
        lab.advance("3s")
        lab.qmp("stop")
        mark = lab.trace()["next"]
        frozen = lab.stats().last_update
        lab.advance("24h")
        assert requests_since(lab, mark) == 0, "polled while paused"
        assert lab.stats().last_update == frozen
        diagnosis = lab.doctor()
        assert diagnosis.verdict == "paused", diagnosis
        lab.qmp("cont")
        lab.advance("2s")
        assert lab.stats().last_update > frozen
        assert lab.doctor().verdict == "healthy"


@pytest.mark.qemu
def test_live_vm_paused_then_resumed(live_vm):
    with balloonlab.connect(live_vm.qmp_socket, timeout=30) as lab:
        try:
            lab.polling_interval = 1
            assert wait_until(lambda: lab.doctor().verdict == "healthy", 30)
            lab.qmp("stop")
            frozen = lab.stats().last_update
            time.sleep(3)  # three polling periods of host time; the VM clock stands still
            assert lab.stats().last_update == frozen, "QEMU polled a paused VM"
            assert lab.doctor().verdict == "paused"
            lab.qmp("cont")
            assert wait_until(lambda: lab.stats().last_update != frozen, 30), "polling did not resume after cont"
            assert lab.doctor().verdict == "healthy"
        finally:
            if not lab.running:
                lab.qmp("cont")
            lab.polling_interval = 0  # leave the shared VM as we found it
