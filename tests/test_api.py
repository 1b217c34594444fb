"""The whole public API, once per backend: the in-process emulator, and a real QEMU with the tiny Linux guest.

The same assertions run against both, which is the point of the emulator: what passes here for "emulated" must
pass for "live".  One lab per backend per module (a live boot costs CPU-seconds under TCG); each test leaves the
lab as it found it (polling off, balloon at full RAM).  Emulated-only behaviour (guest models, the virtual
clock, an external `balloonlab emulate` process) follows at the end.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys

import pytest

import balloonlab
from balloonlab.client import loop as _loop
from balloonlab.errors import (BalloonDisconnectedError, EmulatorOptionError, InvalidValueError, QMPError,
                               UnsupportedBackendError, VirtualClockRequiredError)
from balloonlab.stats import GuestStats
from tests.helpers import clean_loop, process_gone, wait_until  # noqa: F401  (clean_loop: autouse fixture)

MiB = 1 << 20
RAM = 512 * MiB


@pytest.fixture(scope="module", params=["emulated", pytest.param("live", marks=pytest.mark.qemu)])
def lab(request):
    if request.param == "emulated":
        lab = balloonlab.emulate(guest="linux", memory="512M")
    else:
        image = request.getfixturevalue("guest_image")
        lab = balloonlab.launch(memory="512M", image=image)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def fresh(lab):
    """The shared lab, put back as it was after the test: polling off, balloon at full RAM."""
    yield lab
    if not lab.connected:
        return
    lab.polling_interval = 0
    if lab.actual != lab.ram_size:
        lab.set_target(lab.ram_size)
        assert wait_until(lambda: lab.actual == lab.ram_size, 30)


def fresh_report(lab, timeout: float = 20) -> GuestStats:
    """Wait for a report newer than the current one (polling must be on)."""
    first = lab.stats().last_update_seconds
    assert wait_until(lambda: lab.stats().last_update_seconds > first, timeout), "no new report"
    return lab.stats()


def n_stats(lab) -> int:
    major, minor = (int(x) for x in lab.qemu_version.split(".")[:2])
    return 16 if (major, minor) >= (9, 2) else 10


# --- the shared surface ---------------------------------------------------------------------------------------

def test_identity(fresh):
    lab = fresh
    assert lab.backend in ("emulated", "live")
    assert os.path.exists(lab.socket_path)
    expected = {"emulated": "/machine/peripheral-anon/device[1]", "live": "/machine/peripheral/balloon0"}
    assert lab.device_path == expected[lab.backend]
    assert lab.ram_size == RAM
    assert lab.qemu_version.count(".") == 2
    assert lab.backend in repr(lab)
    info = lab.info()
    assert info["device_path"] == lab.device_path and info["ram_size"] == RAM


@pytest.mark.parametrize("value", [2, 10, 0, 4294967295])
def test_polling_interval_values(fresh, value):
    fresh.polling_interval = value
    assert fresh.polling_interval == value


@pytest.mark.parametrize("value, desc", [
    (-1, "timer value must be greater than zero"),
    (4294967296, "timer value is too big"),
    ("2", "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (1.5, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (True, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (None, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
])
def test_polling_interval_errors_are_qemus_words(fresh, value, desc):
    """QEMU's own words come back through raw QMP; the property refuses the same values before sending them."""
    with pytest.raises(QMPError) as err:
        fresh.qmp("qom-set", path=fresh.device_path, property="guest-stats-polling-interval", value=value)
    assert (err.value.error_class, err.value.desc) == ("GenericError", desc)
    if value != "2":  # "2" is a spelling of 2 seconds for the property, as for %balloon poll
        with pytest.raises(InvalidValueError, match=re.escape(repr(value))):
            fresh.polling_interval = value
    assert fresh.polling_interval == 0


def test_stats_shape(fresh):
    lab = fresh
    lab.polling_interval = 1
    s = fresh_report(lab)
    assert isinstance(s, GuestStats)
    assert len(s) == len(s.raw["stats"]) == n_stats(lab)
    assert all(k.startswith("stat-") for k in s.raw["stats"])
    assert isinstance(s.raw["last-update"], int) and s.last_update.tzinfo is not None
    assert 0 < s["free-memory"] <= s["total-memory"] <= RAM
    assert 0 < s["available-memory"] <= s["total-memory"]
    assert s.used_memory() == s["total-memory"] - s["available-memory"]
    assert "<table" in s._repr_html_()


def test_set_target_moves_actual_and_emits_balloon_change(fresh):
    lab = fresh
    assert lab.actual == RAM
    seen = len(lab.events)
    lab.set_target("256M")
    assert wait_until(lambda: lab.actual == 256 * MiB, 30)
    assert wait_until(lambda: any(e["event"] == "BALLOON_CHANGE" and e["data"]["actual"] == 256 * MiB
                                  for e in lab.events[seen:]), 10)
    change = [e for e in lab.events[seen:] if e["event"] == "BALLOON_CHANGE"][-1]
    assert set(change["timestamp"]) == {"seconds", "microseconds"}
    with pytest.raises(QMPError) as err:
        lab.qmp("balloon", value=0)  # raw QMP: QEMU's words (set_target refuses 0 before sending it)
    assert err.value.error_class == "GenericError" and err.value.desc.endswith("expects a size")
    with pytest.raises(InvalidValueError, match="target 0 is not a size"):
        lab.set_target(0)


def test_subscribe_history_and_updates(fresh):
    lab = fresh
    lab.history.enabled = False  # record only while watched
    updates = []
    start = len(lab.history)
    unsubscribe = lab.subscribe(updates.append)
    try:
        assert wait_until(lambda: lab.following, 10)
        lab.polling_interval = 1
        assert wait_until(lambda: sum(u.kind == "stats" for u in updates) >= 2, 20)
        assert wait_until(lambda: len(lab.history) >= start + 2, 10)
        assert any(u.kind == "interval" and u.interval == 1 for u in updates)
        row = lab.history.rows()[-1]
        assert row["interval"] == 1 and row["actual"] == RAM
        assert row["free-memory"] is not None
    finally:
        unsubscribe()
    assert wait_until(lambda: not lab.following, 10)
    grown = len(lab.history)
    lab.stats()
    assert len(lab.history) == grown  # nobody watches: nothing recorded
    lab.history.enabled = True


def test_doctor_healthy_and_polling_off(fresh):
    lab = fresh
    lab.polling_interval = 1
    fresh_report(lab)
    d = lab.doctor()
    assert (d.verdict, d.severity) == ("healthy", "ok"), d.message
    lab.polling_interval = 0
    assert lab.doctor().verdict == "polling-off"


def test_raw_qmp(fresh):
    lab = fresh
    assert lab.qmp("query-balloon") == {"actual": RAM}
    props = {p["name"]: p["type"] for p in lab.qmp("qom-list", path=lab.device_path)}
    assert props["guest-stats-polling-interval"] == "int"
    assert lab.qmp("qom-get", {"path": lab.device_path, "property": "guest-stats-polling-interval"}) == 0


def test_advance_needs_a_virtual_clock(fresh):
    with pytest.raises(VirtualClockRequiredError, match="clock='virtual'"):
        fresh.advance("10s")


def test_backend_specific_helpers(fresh):
    lab = fresh
    if lab.backend == "emulated":
        trace = lab.trace()
        assert {"next", "holder", "exchanges"} <= set(trace)
        assert isinstance(lab.emulator_state()["devices"], list)
        with pytest.raises(UnsupportedBackendError, match="launch"):
            lab.guest_exec("true")
    else:
        assert lab.guest_exec("echo balloon").strip() == "balloon"
        with pytest.raises(UnsupportedBackendError, match="emulate"):
            lab.trace()
        with pytest.raises(UnsupportedBackendError):
            lab.guest("idle")


# --- a dying backend ---------------------------------------------------------------------------------------------

@pytest.fixture(params=["emulated", pytest.param("live", marks=pytest.mark.qemu)])
def doomed(request):
    """A lab of its own and a function that kills its backend the hard way."""
    if request.param == "emulated":
        lab = balloonlab.emulate(guest="linux")

        def kill():  # the in-process emulator cannot be SIGKILLed: drop it as abruptly as it allows
            _loop.run(lab.emulator.stop(), 10)
    else:
        request.getfixturevalue("qemu_binary")
        lab = balloonlab.launch(guest=False)

        def kill():
            os.kill(lab.vm.pid, signal.SIGKILL)
    try:
        yield lab, kill
    finally:
        lab.close()


def test_killed_backend_during_a_subscription(doomed):
    lab, kill = doomed
    updates = []
    lab.subscribe(updates.append)
    assert wait_until(lambda: lab.following, 10)
    kill()
    assert wait_until(lambda: any(u.kind == "disconnected" for u in updates), 10)
    if lab.vm is None:
        with pytest.raises(BalloonDisconnectedError, match="reconnect"):
            lab.stats()
    else:  # the lab knows the process it started: the message names the real cause, everywhere
        said = (f"the QEMU this lab started (pid {lab.vm.pid}) was killed by SIGKILL; start a new one with "
                "balloonlab.launch()")
        assert [u.error for u in updates if u.kind == "disconnected"] == [said]
        for call in (lab.stats, lab.reconnect, lambda: lab.polling_interval):
            with pytest.raises(BalloonDisconnectedError) as info:
                call()
            assert str(info.value) == said
    with pytest.raises(BalloonDisconnectedError):
        lab.set_target("256M")
    assert wait_until(lambda: not lab.following, 10)


def test_close_leaves_nothing_behind(doomed):
    lab, _ = doomed
    socket_path = lab.socket_path
    pid = lab.vm.pid if lab.vm is not None else None
    updates = []
    with lab:
        assert lab.stats() is not None
        lab.subscribe(updates.append)
    assert lab.closed
    assert [u.error for u in updates if u.kind == "disconnected"] == ["the lab was closed (lab.close())"]
    lab.close()  # idempotent
    assert not os.path.exists(socket_path)
    if pid is not None:
        assert wait_until(lambda: process_gone(pid), 10)
    with pytest.raises(BalloonDisconnectedError, match="closed"):
        _ = lab.polling_interval


# --- emulated only ----------------------------------------------------------------------------------------------

def test_emulate_placement_and_options():
    with balloonlab.emulate(id="balloon0", qemu_version="7.2", memory="256M") as lab:
        assert lab.device_path == "/machine/peripheral/balloon0"
        assert lab.ram_size == 256 * MiB
        assert lab.qemu_version.startswith("7.2")
        assert len(lab.stats()) == 10
    with pytest.raises(EmulatorOptionError, match="linux"):
        balloonlab.emulate(guest="beos")
    with pytest.raises(EmulatorOptionError):
        balloonlab.emulate(clock="sundial")


def test_guest_kernel_and_the_virtio_view():
    """A 6.12 guest on the 7.2 profile sends 16 tags, QEMU 7.2 keeps 10; lab.virtio() shows features and config."""
    with balloonlab.emulate(qemu_version="7.2", guest_kernel="6.12", clock="virtual", id="balloon0") as lab:
        entries = lab.trace()["exchanges"][0]["entries"]
        assert len(entries) == 16 and [e["tag"] for e in entries if e["ignored"]] == list(range(10, 16))
        assert len(lab.stats()) == 10
        v = lab.virtio()
        assert v.offered("STATS_VQ") and v.offered("VIRTIO_BALLOON_F_PAGE_POISON") and not v.offered("REPORTING")
        assert v.accepted("STATS_VQ") and not v.accepted("PAGE_POISON")
        assert (v.num_pages, v.actual_pages, v.device_status, v.num_queues) == (0, 0, 15, 3)
        lab.set_target("384M")
        assert lab.virtio().num_pages == 128 * MiB // 4096  # written at once; actual follows the driver
        lab.advance("1s")
        assert lab.virtio().actual_pages == 128 * MiB // 4096
        # QEMU's default page-poison=on gives the full 16 bytes: num_pages, actual, hint command id, poison value
        assert lab.virtio().config_bytes == (32768).to_bytes(4, "little") * 2 + bytes(8)
    with balloonlab.emulate(qemu_version="7.2", guest_kernel="6.1", clock="virtual") as lab:
        assert len(lab.trace()["exchanges"][0]["entries"]) == 10
    with pytest.raises(EmulatorOptionError, match=r"6\.12"):
        balloonlab.emulate(guest_kernel="2.6")


def test_doctor_verdicts_for_emulated_guests():
    with balloonlab.emulate(guest="nodriver") as lab:
        lab.polling_interval = 1
        assert lab.doctor().verdict == "never-reported"
    with balloonlab.emulate(guest="linux", paused=True) as lab:
        assert lab.doctor().verdict == "paused"
        lab.qmp("cont")
        lab.polling_interval = 1
        assert wait_until(lambda: lab.doctor().verdict == "healthy", 10)
    with balloonlab.emulate(guest="buggy", clock="virtual") as lab:
        lab.polling_interval = 1
        lab.advance("60s")
        d = lab.doctor()
        assert d.verdict == "stale", d.message
    with balloonlab.emulate(guest="partial") as lab:
        lab.polling_interval = 1
        assert wait_until(lambda: lab.doctor().verdict == "partial", 10)
    with balloonlab.emulate(guest="windows", clock="virtual") as lab:
        lab.polling_interval = 1
        lab.advance("2s")
        assert lab.doctor().verdict == "healthy"  # tags 0-7: no hugetlb counters on Windows, and that is fine
        lab.guest("service", state="empty")
        lab.advance("2s")
        assert lab.doctor().verdict == "empty-report"


def test_virtual_clock_makes_time_a_parameter():
    with balloonlab.emulate(clock="virtual") as lab:
        lab.polling_interval = 10
        first = lab.stats().last_update_seconds
        lab.advance("1m")
        later = lab.stats().last_update_seconds
        assert 50 <= later - first <= 60


def test_history_is_recorded_by_default_as_the_readme_shows():
    """README: emulate(clock="virtual"), polling every 2 s, advance one minute: history holds the stats found on
    connecting (the boot report) and the 30 reports of that minute, each at its own virtual time."""
    with balloonlab.emulate(clock="virtual") as lab:
        boot = lab.stats().last_update_seconds
        lab.polling_interval = 2
        lab.advance("1m")
        df = lab.history.to_dataframe()
        assert len(df) == 31
        stamps = [int(t.timestamp()) for t in df["last-update"]]
        assert stamps[0] == boot and all(b - a == 2 for a, b in itertools.pairwise(stamps[1:]))
        assert df["free-memory"].iloc[-1] == lab.stats()["free-memory"]
        assert df["interval"].iloc[-1] == 2


def test_history_can_be_turned_off():
    with balloonlab.emulate(clock="virtual", history=False) as lab:
        lab.polling_interval = 2
        lab.advance("1m")
        assert len(lab.history) == 0 and not lab.following
        assert lab.stats().last_update_seconds  # the device polled all the same


@pytest.mark.parametrize("interval,duration", [(1, 3600), (7, 7200)])
def test_advance_replays_every_report_into_history_and_subscribers(interval, duration):
    """On a virtual clock an advance shows history and subscribers each report with its own time, not only the
    state at the end (the watcher alone would see one sample per advance).  QEMU re-arms its timer when the answer
    comes, 2 ms after the request here, so a poll takes interval + 2 ms."""
    reports = int(duration / (interval + 0.002))
    with balloonlab.emulate(clock="virtual", id="balloon0") as lab:
        lab.history.enabled = True
        seen = []
        lab.subscribe(lambda u: seen.append(u) if u.kind == "stats" else None)
        lab.polling_interval = interval
        lab.advance("1s")
        before, seen_before = len(lab.history), len(seen)
        lab.advance(duration)
        updates = [u.stats.last_update_seconds for u in seen[seen_before:]]
        cols = lab.history.columns_dict(("time", "last-update", "free-memory"))
        stamps = cols["last-update"][before:]
        assert abs(len(stamps) - reports) <= 1 and abs(len(updates) - reports) <= 1
        assert all(0 < b - a <= interval + 1 for a, b in itertools.pairwise(stamps)), "a report is missing"
        assert updates == stamps
        times = cols["time"][before:]
        assert all(0 < b - a < interval + 1 for a, b in itertools.pairwise(times))  # each report's own (virtual) time
        assert lab.stats().last_update_seconds == stamps[-1]
        assert cols["free-memory"][-1] == lab.stats()["free-memory"]


@pytest.fixture
def external_emulator(tmp_path):
    """`balloonlab emulate` as a separate process; start()/kill() as often as a test likes."""
    sock = str(tmp_path / "qmp.sock")
    procs: list[subprocess.Popen] = []

    def start(*extra: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", "-qmp",
                                 f"unix:{sock},server=on,wait=off", "-m", "512M", "-device",
                                 "virtio-balloon-pci,id=balloon0", *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        assert wait_until(lambda: os.path.exists(sock) or proc.poll() is not None, 30)
        assert proc.poll() is None, proc.stderr.read().decode()
        return proc

    try:
        yield sock, start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            proc.stderr.close()


def test_reconnect_to_a_restarted_external_emulator(external_emulator):
    sock, start = external_emulator
    proc = start()
    with balloonlab.connect(sock) as lab:
        assert lab.backend == "connected"
        updates = []
        lab.subscribe(updates.append)
        lab.polling_interval = 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: any(u.kind == "disconnected" for u in updates), 10)
        with pytest.raises(BalloonDisconnectedError):
            lab.stats()
        if os.path.exists(sock):
            os.unlink(sock)  # a killed server leaves its socket file behind, as QEMU does
        start()
        lab.reconnect()
        assert lab.connected and lab.device_path == "/machine/peripheral/balloon0"
        assert lab.polling_interval == 0  # a new process: the period is lost (spec C)
        assert wait_until(lambda: lab.following, 10)  # the subscription carried over
        lab.polling_interval = 1
        assert wait_until(lambda: any(u.kind == "interval" and u.interval == 1 for u in updates[-5:]), 10)


def test_advance_an_external_emulator_on_a_virtual_clock(external_emulator):
    sock, start = external_emulator
    start("--clock", "virtual")
    with balloonlab.connect(sock) as lab:
        lab.polling_interval = 10
        first = lab.stats().last_update_seconds
        lab.advance("30s")
        assert 20 <= lab.stats().last_update_seconds - first <= 30
        with pytest.raises(UnsupportedBackendError):
            lab.guest_exec("true")


def test_doctor_reads_an_external_emulators_virtual_wall_clock(external_emulator):
    """Staleness is judged on the emulator's own wall clock (x-balloonlab-status "wall-clock"): on a virtual clock
    the host's would call a report 60 virtual seconds old fresh."""
    sock, start = external_emulator
    start("--clock", "virtual", "--guest", "buggy")
    with balloonlab.connect(sock) as lab:
        lab.polling_interval = 1  # the buggy guest keeps the buffer after this first request
        lab.advance("2s")
        assert lab.doctor().verdict == "healthy"
        lab.advance("60s")
        d = lab.doctor()
        assert d.verdict == "stale", d.message
        assert d.details["age"] >= 60


def test_a_fleet_of_unwatched_labs_runs_no_watchers():
    labs = [balloonlab.emulate(guest="linux", memory="128M", history=False) for _ in range(20)]
    try:
        for lab in labs:
            lab.polling_interval = 1
        assert not any(lab.following for lab in labs)
        unsubscribe = labs[0].subscribe(lambda u: None)
        assert wait_until(lambda: labs[0].following, 10)
        assert not any(lab.following for lab in labs[1:])
        unsubscribe()
        assert wait_until(lambda: not labs[0].following, 10)
    finally:
        for lab in labs:
            lab.close()


def test_a_forgotten_lab_is_cleaned_up_by_its_finalizer():
    import gc

    lab = balloonlab.emulate()
    socket_path = lab.socket_path
    assert os.path.exists(socket_path)
    del lab
    gc.collect()
    assert not os.path.exists(socket_path)


@pytest.mark.parametrize("make", ["emulate()", pytest.param("launch(guest=False)", marks=pytest.mark.qemu)])
def test_labs_left_open_at_exit_are_closed(make, request):
    if make.startswith("launch"):
        request.getfixturevalue("qemu_binary")
    code = f"import balloonlab; lab = balloonlab.{make}; print(lab.socket_path, lab.vm.pid if lab.vm else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    socket_path, pid = out.stdout.split()
    assert not os.path.exists(socket_path)
    if int(pid):
        assert wait_until(lambda: process_gone(int(pid)), 10)
    assert "Error" not in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.qemu
def test_launch_merges_its_feature_flags_with_balloon_options(request):
    request.getfixturevalue("qemu_binary")
    with balloonlab.launch(guest=False, free_page_reporting=True, balloon_options={"deflate-on-oom": True}) as lab:
        for prop in ("free-page-reporting", "deflate-on-oom"):
            assert lab.qmp("qom-get", path=lab.device_path, property=prop) is True, prop


def test_launch_refuses_a_feature_flag_that_balloon_options_turns_off_before_starting_qemu():
    from balloonlab.errors import LaunchError

    with pytest.raises(LaunchError, match=r"free_page_reporting=True and balloon_options=\{'free-page-reporting': "
                                          r"False\} disagree"):
        balloonlab.launch(free_page_reporting=True, balloon_options={"free-page-reporting": False},
                          qemu="/nonexistent/qemu")
