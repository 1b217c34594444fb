"""FleetPanel driven by an emulated host (real QMP to every VM), without a browser.

A slider move is delivered as the browser sends it; what the device did is checked through a second, independent
QMP connection to that VM's socket, so a panel that only believed itself would fail.
"""

from __future__ import annotations

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

import balloonlab
from tests.helpers import clean_loop, wait_for  # noqa: F401  (clean_loop: autouse)
from tests.test_widgets_panel import front_end_sets

MiB = 1 << 20


@pytest.fixture
def fleet():
    host = balloonlab.emulate_host(memory="3G", vms=4, vm_memory="1G", workloads="mixed")
    for lab in host.vms:
        lab.polling_interval = 10
    panel = balloonlab.FleetPanel(host)
    yield host, panel
    panel.close()
    host.close()


def test_one_row_per_vm_and_a_host_bar_of_every_vms_rss_free_and_swap(fleet):
    host, panel = fleet
    assert list(panel.rows) == ["vm0", "vm1", "vm2", "vm3"]
    assert panel.host_bar.labels == ["vm0", "vm1", "vm2", "vm3", "free", "swap"]
    host.advance("1h")
    usage = host.usage()
    wait_for(lambda: panel.wait_idle() and panel.rows["vm2"].rss == usage.rss["vm2"], "the rows show the RSS")
    bar = panel.host_bar.bars.y[:, 0] * MiB
    assert list(bar) == pytest.approx([*usage.rss.values(), usage.free, usage.swap_used])
    for name, row in panel.rows.items():
        assert "RSS" in row.numbers.value and row.doctor.verdict == "healthy", name


def test_a_paused_vm_is_judged_paused_not_stale_and_running_again_after_cont(fleet):
    host, panel = fleet
    host["vm1"].qmp("stop")
    host.advance("5m")  # vm1's clock stands still: its last report ages on the host's wall clock
    wait_for(lambda: panel.wait_idle() and panel.rows["vm1"].doctor.verdict == "paused", "vm1 judged paused")
    assert "status 'paused'" in panel.rows["vm1"].doctor.message
    assert panel.rows["vm0"].doctor.verdict == "healthy"
    host["vm1"].qmp("cont")
    host.advance("30s")
    wait_for(lambda: panel.wait_idle() and panel.rows["vm1"].doctor.verdict == "healthy", "vm1 running again")


def test_every_report_of_an_advance_reaches_each_vms_small_plot(fleet):
    host, panel = fleet
    host.advance("10m")  # 60 reports per VM at 10 s
    wait_for(lambda: panel.wait_idle() and all(r.sparkline.point_count >= 60 for r in panel.rows.values()),
             "60 reports in every sparkline")


def test_moving_one_vms_target_slider_balloons_that_vm_only(fleet):
    host, panel = fleet
    front_end_sets(panel.target_sliders["vm2"], value=600)
    wait_for(lambda: panel.wait_idle() and "vm2: target 600 MiB sent" in panel.status_line.value, "the request")
    host.advance("5s")
    qmp = QEMUMonitorProtocol(host["vm2"].socket_path)
    qmp.connect()
    try:
        assert qmp.cmd("query-balloon") == {"actual": 600 * MiB}
    finally:
        qmp.close()
    assert host["vm1"].actual == 1024 * MiB
    wait_for(lambda: panel.wait_idle() and panel.rows["vm2"].target_control.actual == 600 * MiB, "actual shown")


def test_overcommit_shows_swap_in_the_host_bar():
    with balloonlab.emulate_host(memory="2G", vms=3, vm_memory="1G") as host:
        panel = balloonlab.FleetPanel(host)
        try:
            for lab in host.vms:
                lab.guest("allocate", size="700M")
            host.advance("10s")
            wait_for(lambda: panel.wait_idle() and "swap" in panel.host_bar.summary.value
                     and panel.host_bar.bars.y[-1, 0] > 0, "swap in the bar")
        finally:
            panel.close()


def test_closing_the_panel_stops_its_thread_and_leaves_the_host_running(fleet):
    host, panel = fleet
    panel.close()
    assert panel.closed and not panel._pump._thread.is_alive()
    assert host.usage().total == 3 << 30


def test_the_dashboards_panel_only_shows_and_refuses_a_target_sent_anyway():
    """Anyone with the dashboard's token sees its page: its sliders are disabled, and a target the browser sends
    anyway (a hand-made comm message) changes nothing on the VM.  ``--allow-changes`` gives the usual panel."""
    from balloonlab.widgets.dashboard import dashboard_view

    host = balloonlab.emulate_host(memory="2G", vms=2, vm_memory="1G", workloads="steady")
    panel = dashboard_view(host)
    try:
        assert all(slider.disabled for slider in panel.target_sliders.values())
        front_end_sets(panel.target_sliders["vm1"], value=600)
        wait_for(lambda: panel.wait_idle() and "vm1: target 600 MiB not set" in panel.status_line.value,
                 "the refusal")
        host.advance("5s")
        assert host["vm1"].target is None and host["vm1"].actual == 1024 * MiB
        assert panel.target_sliders["vm1"].value == 1024
    finally:
        panel.close()
    changing = dashboard_view(host, allow_changes=True)
    try:
        assert not any(slider.disabled for slider in changing.target_sliders.values())
    finally:
        changing.close()
        host.close()
