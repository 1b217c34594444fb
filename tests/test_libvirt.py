"""The libvirt backend against a real libvirtd (private, started by the fixture) running the tiny guest.

The same checks as on QEMU: stats (same GuestStats keys, libvirt's names and KiB mapped back), the polling
interval, the target and BALLOON_CHANGE, host RSS, raw QMP through libvirt's passthrough, doctor and history; a
fleet over two libvirt connections; and the bad conditions (no balloon, a domain that goes away, libvirtd
restarted, libvirtd not running, libvirt-python missing).
"""

from __future__ import annotations

import sys
import time
import warnings

import pytest

import balloonlab
from balloonlab.client.libvirt_client import stats_from_libvirt
from balloonlab.errors import (BalloonDisconnectedError, InvalidValueError, LibvirtError, NoBalloonDeviceError,
                               QMPError)
from balloonlab.stats import STATS
from tests.helpers import clean_loop, wait_for, wait_until  # noqa: F401  (clean_loop: autouse)

pytestmark = [pytest.mark.libvirt, pytest.mark.qemu, pytest.mark.slow]

MiB = 1024 * 1024
BASE_KEYS = [s.key for s in STATS if s.since <= (3, 0)]


@pytest.fixture(scope="module")
def web1(libvirtd):
    """A running domain with a balloon (256 MiB, stats every 2 s), shared by the module; left as found."""
    libvirtd.define_vm("web1", memory_mib=256)
    return libvirtd


@pytest.fixture
def lab(web1):
    lab = balloonlab.connect(web1.uri, domain="web1")
    yield lab
    lab.close()


def _libvirt_dom(daemon, name):
    import libvirt

    conn = libvirt.open(daemon.uri)
    return conn, conn.lookupByName(name)


# Stats, names and units -----------------------------------------------------------------------------------------
def test_libvirt_names_map_back_to_qemu_names_and_bytes():
    raw = stats_from_libvirt({"actual": 262144, "unused": 100, "available": 200, "usable": 150, "swap_in": 3,
                              "minor_fault": 7, "last_update": 1700000000, "rss": 5})
    stats = raw["stats"]
    assert stats["stat-free-memory"] == 100 * 1024  # unused
    assert stats["stat-total-memory"] == 200 * 1024  # available (sic)
    assert stats["stat-available-memory"] == 150 * 1024  # usable
    assert stats["stat-swap-in"] == 3 * 1024  # bytes in QEMU, KiB in libvirt
    assert stats["stat-minor-faults"] == 7  # a count: no unit to convert
    assert stats["stat-disk-caches"] == 2**64 - 1  # not reported: unset, as QEMU says it
    assert raw["last-update"] == 1700000000


def test_a_libvirt_lab_reads_the_same_stats_as_qemu_sends(lab):
    assert lab.backend == "libvirt"
    assert lab.name == "web1"
    assert lab.device_path == "/machine/peripheral/balloon0"
    assert lab.ram_size == 256 * MiB
    # The same report through libvirt's API and through QMP (libvirt's passthrough): equal, key by key.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20):
            via_libvirt = lab.stats()
            via_qmp = lab.qmp("qom-get", path=lab.device_path, property="guest-stats")
            if via_qmp["last-update"] == int(via_libvirt.last_update.timestamp()):
                break
        else:
            pytest.fail("libvirt and QMP never showed the same report")
    assert list(via_libvirt) == BASE_KEYS
    for key in BASE_KEYS:
        qmp_value = via_qmp["stats"]["stat-" + key]
        # libvirt shows bytes in KiB: what QEMU sends, rounded down to a KiB
        expected = None if qmp_value == 2**64 - 1 else (qmp_value // 1024 * 1024 if key in (
            "swap-in", "swap-out", "free-memory", "total-memory", "available-memory", "disk-caches") else qmp_value)
        assert via_libvirt[key] == expected, key
    assert 0 < via_libvirt["free-memory"] < via_libvirt["total-memory"] <= 256 * MiB


def test_polling_interval_is_read_and_set_through_libvirt(lab, web1):
    assert lab.polling_interval == 2
    try:
        lab.polling_interval = 5
        assert lab.polling_interval == 5
        conn, dom = _libvirt_dom(web1, "web1")
        try:
            assert "period='5'" in dom.XMLDesc(0)
        finally:
            conn.close()
        with pytest.raises(InvalidValueError):
            lab.polling_interval = "often"  # type: ignore[assignment]
    finally:
        lab.polling_interval = 2


def test_set_target_moves_actual_and_libvirt_sends_balloon_change(lab):
    try:
        lab.set_target("200M")
        assert lab.target == 200 * MiB
        assert wait_until(lambda: lab.actual == 200 * MiB, timeout=30)
        change = wait_for(lambda: [e for e in lab.events if e["event"] == "BALLOON_CHANGE"
                                   and e["data"]["actual"] == 200 * MiB], "BALLOON_CHANGE to 200 MiB")
        assert set(change[-1]) == {"timestamp", "event", "data"}
        with pytest.raises(LibvirtError) as err:
            lab.set_target("1G")  # above the domain's maximum: libvirt's words
        assert err.value.code is not None and "max" in err.value.libvirt_message.lower()
    finally:
        lab.set_target("256M")
        assert wait_until(lambda: lab.actual == 256 * MiB, timeout=30)


def test_host_rss_is_libvirts_rss_in_bytes(lab):
    rss = lab.host_rss
    assert 32 * MiB < rss < 1024 * MiB  # a 256 MiB TCG guest plus QEMU itself


def test_raw_qmp_passes_through_libvirt_and_says_once_that_it_taints(lab):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert lab.qmp("query-balloon") == {"actual": lab.actual}
        assert lab.qmp("qom-get", path=lab.device_path, property="guest-stats-polling-interval") == 2
        with pytest.raises(QMPError) as err:
            lab.qmp("no-such-command")
    assert err.value.error_class == "CommandNotFound"
    assert err.value.desc == "The command no-such-command has not been found"
    taint = [w for w in seen if "tainted" in str(w.message)]
    assert len(taint) == 1


def test_doctor_and_history_work_on_a_libvirt_lab(web1):
    lab = balloonlab.connect(web1.uri, domain="web1", history=True)
    try:
        assert lab.doctor().ok
        assert wait_until(lambda: len(lab.history) >= 2, timeout=20)  # two reports, 2 s apart
        latest = lab.history.latest()
        assert latest is not None and latest["total-memory"] == lab.stats()["total-memory"]
        assert latest["interval"] == 2
    finally:
        lab.close()


# Fleet ------------------------------------------------------------------------------------------------------------
def test_a_fleet_over_two_libvirt_connections_shows_both_hosts_vms(web1, second_libvirtd):
    second_libvirtd.define_vm("db1", memory_mib=200)
    second_libvirtd.define_vm("noballoon", memory_mib=64, balloon=False)
    fleet = balloonlab.fleet([web1.uri, second_libvirtd.uri])
    try:
        assert sorted(fleet.names) == ["db1", "web1"]
        assert any(key.endswith("/noballoon") for key in fleet.skipped)
        assert fleet["db1"].backend == "libvirt"
        assert fleet["db1"].ram_size == 200 * MiB
        assert fleet["web1"].stats()["total-memory"] > 0
        usage = fleet.usage()
        assert usage.total > 0 and 0 < usage.free <= usage.total and usage.used == sum(usage.rss.values())
        assert set(usage.rss) == {"db1", "web1"} and all(rss > 32 * MiB for rss in usage.rss.values())
        assert usage.swap_used == usage.swap_total == 0  # libvirt's node stats say nothing about swap
        assert fleet.memory == usage.total and fleet.clock == "real" and "db1" in fleet
        seen: list[str] = []
        stop = fleet.subscribe_vms(lambda name, update: seen.append(name))
        try:
            fleet["web1"].polling_interval = 3
            assert wait_until(lambda: "web1" in seen, timeout=10)
        finally:
            fleet["web1"].polling_interval = 2
            stop()
        with pytest.raises(KeyError, match="db1"):
            fleet["nope"]
    finally:
        fleet.close()
    assert all(vm.closed for vm in fleet.vms)


def test_a_fleet_refresh_closes_a_lost_lab_and_finds_its_domain_again_when_it_restarts(libvirtd):
    """A domain that stops and starts again under the same name before the next refresh: the refresh closes the
    lab that lost it (nothing of it left listening) and opens a new one on the new domain."""
    libvirtd.define_vm("again", memory_mib=128)
    fleet = balloonlab.fleet(libvirtd.uri)
    try:
        old = fleet["again"]
        libvirtd.destroy_vm("again")
        assert wait_until(lambda: not old.connected, timeout=20)
        libvirtd.define_vm("again", memory_mib=128)
        fleet.refresh()
        assert old.closed
        assert "again" in fleet.names and fleet["again"] is not old and fleet["again"].connected
        assert fleet["again"].stats()["total-memory"] > 0
    finally:
        fleet.close()
        libvirtd.destroy_vm("again")


def test_a_dry_run_policy_on_a_fleet_reads_the_fleets_hosts_not_this_machine(web1):
    """A fleet's hosts may be remote: the run's host memory is libvirt's node stats and the VMs' rss (what
    ``Fleet.usage()`` says), not this machine's /proc/meminfo."""
    from balloonlab.policy import FixedPolicy, run

    fleet = balloonlab.fleet(web1.uri)
    try:
        result = run(fleet, FixedPolicy("200M"), duration="4s", tick="1s", dry_run=True)
        result.wait(timeout=120, show=False)
        assert result.decisions and not any(d.applied for d in result.decisions)
        df = result.to_dataframe()
        assert set(df["vm"]) == set(fleet.names)
        per_tick = df.groupby("time").agg(rss=("rss", "sum"), host_used=("host_used", "first"))
        # the same rss read twice in one tick (the VM's row, then the fleet's usage): equal but for a few pages
        assert ((per_tick["host_used"] - per_tick["rss"]).abs() <= 8 * MiB).all()
        assert fleet["web1"].target is None
    finally:
        fleet.close()


def test_reconnect_on_a_working_libvirt_lab_keeps_its_connection_until_the_domain_is_found(web1):
    lab = balloonlab.connect(web1.uri, domain="web1")
    try:
        updates = []
        lab.subscribe(updates.append)
        conn = lab._client.host.conn
        lab.reconnect()
        assert lab._client.host.conn is conn and lab.connected
        assert lab.polling_interval == 2 and lab.stats()["total-memory"] > 0
        assert not any(u.kind == "disconnected" for u in updates)
    finally:
        lab.close()


# Bad conditions ---------------------------------------------------------------------------------------------------
def test_a_domain_without_balloon_is_a_clear_error(libvirtd):
    libvirtd.define_vm("bare", memory_mib=64, balloon=False)
    try:
        with pytest.raises(NoBalloonDeviceError, match="memballoon model='virtio'"):
            balloonlab.connect(libvirtd.uri, domain="bare")
    finally:
        libvirtd.destroy_vm("bare")


def test_an_unknown_domain_names_the_running_ones(web1):
    with pytest.raises(BalloonDisconnectedError, match="web1"):
        balloonlab.connect(web1.uri, domain="nosuchvm")


def test_a_domain_that_disappears_mid_watch_disconnects_the_lab_and_reconnect_brings_it_back(libvirtd):
    libvirtd.define_vm("brief", memory_mib=128)
    lab = balloonlab.connect(libvirtd.uri, domain="brief")
    try:
        updates = []
        lab.subscribe(updates.append)
        libvirtd.destroy_vm("brief")
        assert wait_until(lambda: any(u.kind == "disconnected" for u in updates), timeout=20)
        with pytest.raises(BalloonDisconnectedError, match="reconnect"):
            lab.stats()
        with pytest.raises(BalloonDisconnectedError, match="brief"):
            lab.reconnect()
        libvirtd.define_vm("brief", memory_mib=128)
        lab.reconnect()
        assert lab.stats().last_update is not None
    finally:
        lab.close()
        libvirtd.destroy_vm("brief")


def test_libvirtd_restarted_under_a_connected_lab_is_a_clear_error_then_reconnect_works(web1):
    lab = balloonlab.connect(web1.uri, domain="web1")
    try:
        updates = []
        lab.subscribe(updates.append)
        web1.restart_libvirtd()
        assert wait_until(lambda: any(u.kind == "disconnected" for u in updates), timeout=30)
        with pytest.raises(BalloonDisconnectedError, match="libvirt"):
            _ = lab.polling_interval
        lab.reconnect()
        assert lab.polling_interval == 2
        assert lab.stats()["total-memory"] > 0
    finally:
        lab.close()


def test_a_shared_libvirt_host_reopens_once_and_a_closed_one_refuses_calls_as_disconnected(web1):
    """The labs of a fleet share one host and may all find it lost at once: reopening an open host leaves its
    connection (and the threads the other labs' calls run on) alone; a closed host's calls are a disconnected
    lab's error, not the thread pool's RuntimeError."""
    from balloonlab.client import loop as _loop
    from balloonlab.client.libvirt_host import LibvirtHost

    host = LibvirtHost.open(web1.uri)
    try:
        conn = host.conn
        host.reopen()
        assert host.conn is conn and _loop.run(host.call(conn.getVersion), 10) > 0
        host.disconnect()
        with pytest.raises(BalloonDisconnectedError, match="reconnect"):
            _loop.run(host.call(conn.getVersion), 10)
        host.reopen()
        assert host.alive and _loop.run(host.call(host.conn.getVersion), 10) > 0
    finally:
        host.close()


def test_libvirtd_not_running_says_what_to_start(tmp_path, libvirt_available):
    start = time.monotonic()
    with pytest.raises(BalloonDisconnectedError, match="Is libvirtd running"):
        balloonlab.connect(f"qemu:///system?socket={tmp_path}/none", domain="web1", timeout=5)
    assert time.monotonic() - start < 30  # no hang (the bound is generous: the error itself is immediate)


def test_an_unreachable_host_gives_up_at_the_timeout(libvirt_available):
    # 192.0.2.0/24 is TEST-NET-1: never routed.  Either the network says so at once or the timeout ends the wait.
    with pytest.raises(BalloonDisconnectedError) as err:
        balloonlab.connect("qemu+tcp://192.0.2.1/system", domain="web1", timeout=2)
    assert "192.0.2.1" in str(err.value)


def test_refused_credentials_are_a_clear_error_and_nothing_is_asked(sasl_libvirtd):
    with pytest.raises(LibvirtError, match="refused the credentials") as err:
        balloonlab.connect(sasl_libvirtd.uri, domain="web1", timeout=10)
    assert "authentication failed" in err.value.libvirt_message
    assert "ssh key or agent" in str(err.value)


def test_a_password_in_the_uri_is_never_shown(libvirt_available):
    with pytest.raises(BalloonDisconnectedError) as err:
        balloonlab.connect("qemu+tcp://admin:hunter2@192.0.2.1/system", domain="web1", timeout=2)
    assert "hunter2" not in str(err.value) and "admin:***@192.0.2.1" in str(err.value)


def test_libvirt_python_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)  # what `import libvirt` does when it is not installed
    with pytest.raises(LibvirtError, match=r"pip install 'balloonlab\[libvirt\]'"):
        balloonlab.connect("qemu:///system", domain="web1")


def test_a_libvirt_uri_without_a_domain_is_refused():
    with pytest.raises(InvalidValueError, match="domain="):
        balloonlab.connect("qemu:///system")


# Magics in a real kernel ------------------------------------------------------------------------------------------
def test_balloon_connect_and_fleet_magics_in_a_kernel(web1, tmp_path):
    import nbclient

    from tests.fixtures.jupyter import make_notebook

    nb = make_notebook([
        "%load_ext balloonlab",
        f"%balloon connect {web1.uri} web1",
        "s = %balloon stats\nprint(list(s) == " + repr(BASE_KEYS) + ")",
        "%balloon poll 3\ni = %balloon info\nprint(i.backend, i.polling_interval)",
        "%balloon connect qemu:///system",
        f"p = %balloon fleet {web1.uri}\nprint(p.host.names, type(p).__name__)",
        "%balloon use web1\n%balloon poll 2\n%unload_ext balloonlab\nprint(p.host.closed, p.host.vms[0].closed)",
    ])
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=60,
                                     allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    def text(i: int) -> str:
        return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in nb.cells[i].outputs
                       if o.output_type in ("stream", "execute_result"))

    def errors(i: int) -> list:
        return [o for o in nb.cells[i].outputs if o.output_type == "error"]

    assert text(1).startswith("<Balloon libvirt QEMU")
    assert "True" in text(2)
    assert text(3) == "polling every 3 s\nlibvirt 3\n"
    usage = "".join(o.get("text", "") for o in nb.cells[4].outputs if o.output_type == "stream")
    assert "UsageError: %balloon connect: name the VM: %balloon connect qemu:///system DOMAIN" in usage
    assert "['web1'] FleetPanel" in text(5)
    assert "True True" in text(6) and not errors(6)


def test_the_operators_notebook_runs_against_a_real_libvirt_host(web1, tmp_path, monkeypatch):
    from pathlib import Path

    import nbclient
    import nbformat

    monkeypatch.setenv("BALLOONLAB_LIBVIRT_URI", web1.uri)  # the kernel inherits it
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    path = Path(__file__).resolve().parents[1] / "notebooks" / "07-operators.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    first = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream")
    assert first.startswith("<Fleet 1 VM on 1 host: web1>")
    overview = nb.cells[3].outputs[0]["data"]["text/plain"]
    assert "libvirt" in overview and "web1" in overview
    check = "".join(o.get("text", "") for o in nb.cells[10].outputs if o.output_type == "stream")
    assert check.strip() == "right"


def test_a_libvirt_lab_is_not_recorded_behind_libvirts_back(lab, tmp_path):
    from balloonlab.errors import UnsupportedBackendError

    with pytest.raises(UnsupportedBackendError, match="tainted"):
        lab.record(tmp_path / "web1.blab")
    assert not (tmp_path / "web1.blab").exists()
