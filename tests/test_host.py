"""``balloonlab.emulate_host``: many emulated VMs, each a full QEMU on its own socket, sharing one host's memory."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

import balloonlab
from balloonlab.emulator.workloads import WORKLOADS, assign
from tests.fixtures.ipython import ip  # noqa: F401  (fixture)
from tests.helpers import clean_loop, wait_for  # noqa: F401  (clean_loop: autouse)

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture
def host():
    h = balloonlab.emulate_host(memory="3G", vms=4, vm_memory="1G")
    yield h
    h.close()


def test_a_host_names_its_vms_and_finds_each_by_name(host):
    assert [lab.name for lab in host.vms] == ["vm0", "vm1", "vm2", "vm3"]
    assert host["vm1"] is host.vms[1]
    assert host.memory == 3 * GiB
    assert all(isinstance(lab, balloonlab.Balloon) for lab in host.vms)


def test_an_unknown_vm_name_is_a_key_error_that_suggests_the_nearest(host):
    with pytest.raises(balloonlab.UnknownVMError, match="did you mean 'vm1'") as err:
        host["vm-1"]
    assert isinstance(err.value, KeyError)


def test_every_vm_is_a_full_qemu_on_its_own_qmp_socket(host):
    sockets = {lab.socket_path for lab in host.vms}
    assert len(sockets) == 4
    qmp = QEMUMonitorProtocol(host["vm2"].socket_path)
    qmp.connect()
    try:
        assert qmp.cmd("query-balloon") == {"actual": GiB}
        qmp.cmd("balloon", value=512 * MiB)
    finally:
        qmp.close()
    host.advance("2s")
    assert host["vm2"].actual == 512 * MiB
    assert host["vm1"].actual == GiB


def test_usage_adds_up_and_every_vm_costs_the_host_its_overhead_and_touched_memory(host):
    usage = host.usage()
    assert isinstance(usage, balloonlab.HostUsage)
    assert set(usage.rss) == {"vm0", "vm1", "vm2", "vm3"}
    assert usage.used == sum(usage.rss.values())
    assert usage.total == usage.used + usage.free == 3 * GiB
    assert usage.swap_used == 0
    assert usage.rss["vm0"] == host["vm0"].host_rss


def test_one_clock_moves_the_host_and_every_vm(host):
    for lab in host.vms:
        lab.polling_interval = 10
    host.advance("1m")
    updates = {lab.name: lab.stats().last_update for lab in host.vms}
    assert len(set(updates.values())) == 1  # every VM answered its last request at the same host time
    host["vm3"].advance("1m")  # a VM's own advance moves the whole host
    assert {lab.stats().last_update for lab in host.vms} == {updates["vm0"] + timedelta(seconds=60)}


def test_add_vm_joins_at_the_hosts_time_with_its_own_properties(host):
    host.advance("1h")
    lab = host.add_vm(memory="512M", deflate_on_oom=True)
    assert lab.name == "vm4" and lab.ram_size == 512 * MiB
    assert lab.qmp("qom-get", path=lab.device_path, property="deflate-on-oom") is True
    assert host["vm0"].qmp("qom-get", path=host["vm0"].device_path, property="deflate-on-oom") is False
    lab.polling_interval = 5
    host.advance("5s")
    host_now = host["vm0"].emulator_state()["wall-clock"]
    assert host_now - 6 <= lab.stats().last_update.timestamp() <= host_now  # not an hour behind


def test_when_the_vms_need_more_than_the_hosts_ram_the_host_swaps_and_the_guests_stall():
    with balloonlab.emulate_host(memory="2G", vms=3, vm_memory="1G") as host:
        for lab in host.vms:
            lab.polling_interval = 5
        host.advance("10s")
        calm = {lab.name: lab.stats() for lab in host.vms}
        for lab in host.vms:
            lab.guest("allocate", size="700M", duration="5s")
        host.advance("10s")
        usage = host.usage()
        assert usage.swap_used > 0
        assert usage.used <= usage.total
        host.advance("1m")
        for lab in host.vms:
            s = lab.stats()
            assert s["major-faults"] > calm[lab.name]["major-faults"]
            assert s["alloc-stalls"] > calm[lab.name]["alloc-stalls"]


def test_closing_the_host_closes_every_vm_and_removes_its_socket():
    host = balloonlab.emulate_host(vms=2)
    sockets = [lab.socket_path for lab in host.vms]
    labs = host.vms
    host.close()
    assert all(lab.closed for lab in labs)
    assert not any(os.path.exists(s) for s in sockets)
    with pytest.raises(balloonlab.BalloonDisconnectedError):
        host.usage()


def test_mixed_workloads_give_every_workload_before_repeating_and_depend_only_on_the_seed():
    plan = assign("mixed", [f"vm{i}" for i in range(8)], seed=3)
    assert set(list(plan.values())[:6]) == set(WORKLOADS)
    assert plan == assign("mixed", [f"vm{i}" for i in range(8)], seed=3)


def _day(seed):
    with balloonlab.emulate_host(memory="4G", vms=6, vm_memory="1G", workloads="mixed", seed=seed) as host:
        host.advance("6h")
        return host.usage().rss


def test_a_virtual_day_is_the_same_for_the_same_seed_and_differs_for_another():
    assert _day(1) == _day(1)
    assert _day(1) != _day(2)


def test_workloads_move_memory_the_way_their_names_say():
    plan = {"vm0": "idle", "vm1": "leak", "vm2": "batch"}
    with balloonlab.emulate_host(memory="8G", vms=3, vm_memory="1G", workloads=plan, seed=0) as host:
        start = host.usage().rss
        host.advance("8h")
        end = host.usage().rss
        assert end["vm0"] == pytest.approx(start["vm0"], abs=4 * MiB)
        assert end["vm1"] - start["vm1"] > 100 * MiB  # 2-4 % of 1 GiB an hour, for 8 h
        assert end["vm2"] - start["vm2"] > 300 * MiB  # a batch job touched 40-60 % of RAM and it stays resident


def test_an_unknown_workload_is_refused_with_the_choices():
    with pytest.raises(balloonlab.EmulatorOptionError, match="diurnal"):
        balloonlab.emulate_host(vms=1, workloads="sleepy")


def _quit(lab):
    qmp = QEMUMonitorProtocol(lab.socket_path)
    qmp.connect()
    with contextlib.suppress(EOFError):  # the VM may close the connection before the client does
        try:
            qmp.cmd("quit")
        finally:
            qmp.close()


def test_a_vm_stopped_by_qmp_quit_leaves_the_host_and_is_named_but_one_closed_by_its_lab_is_not():
    with balloonlab.emulate_host(vms=3) as host:
        _quit(host["vm1"])
        host["vm2"].close()
        assert wait_for(lambda: set(host.usage().rss) == {"vm0"}, "vm1 and vm2 gone from the host")
        assert host.stopped_vms() == ["vm1"]
        assert host.names == ["vm0"]


@pytest.mark.parametrize("close_old_lab_first", [False, True])
def test_a_name_freed_by_qmp_quit_can_be_added_again_and_the_new_vm_is_on_the_host(close_old_lab_first):
    with balloonlab.emulate_host(vms=2) as host:
        old = host["vm1"]
        _quit(old)
        assert wait_for(lambda: host.names == ["vm0"], "vm1 gone from the host")
        if close_old_lab_first:
            old.close()
        new = host.add_vm("1G", name="vm1")
        assert host.names == ["vm0", "vm1"] and host["vm1"] is new and new is not old
        assert new.actual == 1 << 30 and set(host.usage().rss) == {"vm0", "vm1"}
        assert old.closed
        assert host.stopped_vms() == ["vm1"]  # the one that quit, still named


def test_advancing_one_vm_advances_the_host_and_every_vms_history_sees_each_report(ip):
    with contextlib.closing(balloonlab.emulate_host(memory="2G", vms=2, vm_memory="512M", history=True)) as host:
        for lab in host:
            lab.polling_interval = 2
        before = {lab.name: len(lab.history) for lab in host}
        host["vm0"].advance("1m")
        for lab in host:  # the other VM's history too: each report of the minute, not only the end state
            assert len(lab.history) - before[lab.name] >= 30, lab.name

        ip.user_ns["host"] = host  # %balloon advance on one VM takes the same path
        ip.run_line_magic("balloon", "use host")
        ip.run_line_magic("balloon", "use vm1")
        before = {lab.name: len(lab.history) for lab in host}
        ip.run_line_magic("balloon", "advance 1m")
        for lab in host:
            assert len(lab.history) - before[lab.name] >= 30, lab.name


def test_a_hosts_vms_record_history_only_when_asked():
    # A single lab records every report by default; a host's VMs do not (a policy day of 20 VMs would be
    # millions of reports nobody reads) until the host or one VM asks.
    with contextlib.closing(balloonlab.emulate_host(memory="2G", vms=2, vm_memory="512M", seed=1)) as quiet:
        quiet["vm0"].polling_interval = 2
        quiet.advance("1m")
        assert len(quiet["vm0"].history) == 0
        quiet["vm1"].history.enabled = True
        quiet["vm1"].polling_interval = 2
        quiet.advance("1m")
        assert len(quiet["vm1"].history) >= 30 and len(quiet["vm0"].history) == 0
    with contextlib.closing(balloonlab.emulate_host(memory="2G", vms=1, vm_memory="512M", history=True)) as loud:
        loud["vm0"].polling_interval = 2
        loud.advance("1m")
        assert len(loud["vm0"].history) >= 30


@pytest.mark.parametrize("timeout", [0.0, 0.001, 0.01])
def test_a_host_that_does_not_answer_in_time_raises_balloon_disconnected_and_leaves_no_vm_running(timeout):
    from balloonlab.client import loop as _loop

    live_before = _live_emulators()
    try:
        host = balloonlab.emulate_host(vms=2, timeout=timeout)
    except balloonlab.BalloonDisconnectedError as exc:  # from the host, or from a VM's lab connecting to it
        assert f"within {timeout:g} s" in str(exc)
    else:
        host.close()
    assert wait_for(lambda: _live_emulators() <= live_before, "every VM started late stopped again")
    assert _loop.loop_errors() == []


def _live_emulators() -> set:
    """The in-process emulators whose QMP socket is still there, by identity."""
    import gc

    from balloonlab.emulator import Emulator

    return {id(o) for o in gc.get_objects()
            if isinstance(o, Emulator) and o.socket_path and os.path.exists(o.socket_path)}
