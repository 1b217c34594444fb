"""BalloonPanel driven by an emulated lab (real QMP over a unix socket), without a browser.

Front-end moves are simulated as the browser sends them (``_handle_msg`` with an ``update``); the device's state
is checked through a SECOND, independent QMP connection (a raw ``qemu.qmp.QMPClient`` on ``lab.socket_path``), so
a panel that only believed itself would fail.  Every wait polls with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from qemu.qmp import QMPClient

import balloonlab
from balloonlab.client import loop as _loop
from balloonlab.stats import UNSET
from balloonlab.widgets import BalloonPanel
from tests.helpers import wait_for

MiB = 1 << 20
INTERVAL = "guest-stats-polling-interval"


def front_end_sets(widget: Any, **state: Any) -> None:
    """Deliver a state update exactly as the browser does (comm message ``update``); must never raise."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


class RawQMP:
    """A second QMP connection of its own (own loop, own QMPClient): what qmp-shell or libvirt would be."""

    def __init__(self, socket_path: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = QMPClient("second-connection")
        self.loop.run_until_complete(asyncio.wait_for(self.client.connect(socket_path), 10))

    def execute(self, command: str, arguments: dict | None = None) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(self.client.execute(command, arguments), 10))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.client.disconnect())
        finally:
            self.loop.close()


@pytest.fixture
def make():
    """Factories for labs, panels and second connections; everything is closed again, panels first."""
    labs: list[Any] = []
    panels: list[BalloonPanel] = []
    raws: list[RawQMP] = []

    class Make:
        @staticmethod
        def lab(**options: Any) -> Any:
            lab = balloonlab.emulate(**options)
            labs.append(lab)
            return lab

        @staticmethod
        def panel(lab: Any, **options: Any) -> BalloonPanel:
            panel = BalloonPanel(lab, **options)
            panels.append(panel)
            return panel

        @staticmethod
        def raw(lab: Any) -> RawQMP:
            raw = RawQMP(lab.socket_path)
            raws.append(raw)
            return raw

    errors_before = len(_loop.loop_errors())
    try:
        yield Make
    finally:
        for panel in panels:
            panel.close()
        for raw in raws:
            raw.close()
        for lab in labs:
            lab.close()
    # Nothing the panel did may have blown up on the lab's loop (e.g. a lab call from a subscribe callback).
    assert _loop.loop_errors()[errors_before:] == []


def device_interval(raw: RawQMP, lab: Any) -> int:
    return raw.execute("qom-get", {"path": lab.device_path, "property": INTERVAL})


def test_interval_slider_sets_the_device_as_a_second_connection_sees_it(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    raw = make.raw(lab)
    assert panel.interval_slider.value == device_interval(raw, lab) == 0

    front_end_sets(panel.interval_slider, value=7)

    wait_for(lambda: device_interval(raw, lab) == 7, "the device's interval to become 7 (second connection)")
    wait_for(lambda: "every 7 s" in panel.interval_control.label.value, "the label to confirm 7 s")
    assert panel.interval_slider.value == 7
    assert panel.status_severity == "ok" and "polling interval 7 s" in panel.status


def test_interval_changed_elsewhere_moves_the_slider(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    raw = make.raw(lab)

    raw.execute("qom-set", {"path": lab.device_path, "property": INTERVAL, "value": 13})

    wait_for(lambda: panel.interval_slider.value == 13, "the slider to follow the other connection's qom-set")
    assert "every 13 s" in panel.interval_control.label.value
    assert device_interval(raw, lab) == 13  # following never writes back
    panel.wait_idle()
    assert panel.plot.marker_count("interval") == 1
    assert "polling interval 0 s \u2192 13 s" in panel.events.value

    # Beyond the slider's 60 s: the slider widens rather than clamping (a clamp would rewrite the device).
    raw.execute("qom-set", {"path": lab.device_path, "property": INTERVAL, "value": 600})
    wait_for(lambda: panel.interval_slider.value == 600, "the slider to show 600 s")
    assert panel.interval_slider.max == 600
    assert device_interval(raw, lab) == 600


def test_a_refused_interval_shows_in_the_status_line_and_the_slider_snaps_back(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    raw = make.raw(lab)
    panel.interval_slider.max = 2**33  # let the front end offer a value QEMU refuses

    front_end_sets(panel.interval_slider, value=2**32)  # returns normally: the refusal is not raised here

    # refused before it is sent (units.parse_interval), in the words lab.polling_interval and %balloon poll use
    wait_for(lambda: "QEMU&#x27;s interval is at most 4294967295 s" in panel.status_line.value,
             "the refusal in the status line")
    assert panel.status_severity == "error"
    assert "InvalidValueError" in panel.status
    wait_for(lambda: panel.interval_slider.value == 0, "the slider to snap back to the device's 0")
    assert device_interval(raw, lab) == 0
    assert not panel.interval_control.binding.pending


def test_target_slider_moves_actual_and_its_label(make) -> None:
    lab = make.lab(guest="linux", memory="512M")
    panel = make.panel(lab)
    assert panel.target_slider.max == 512 and panel.target_slider.min == 64
    assert panel.target_slider.value == 512
    assert "512.0 MiB" in panel.target_control.actual_label.value

    front_end_sets(panel.target_slider, value=256)

    wait_for(lambda: lab.actual == 256 * MiB, "the guest to balloon down to 256 MiB", timeout=30)
    wait_for(lambda: panel.target_control.actual == 256 * MiB, "the panel's actual to follow", timeout=10)
    assert "256.0 MiB" in panel.target_control.actual_label.value
    assert panel.target_slider.value == 256
    wait_for(lambda: "BALLOON_CHANGE" in panel.events.value, "BALLOON_CHANGE in the event log")
    assert panel.plot.marker_count("balloon") >= 1


def test_nodriver_guest_shows_every_stat_unset_with_its_wire_value(make) -> None:
    lab = make.lab(guest="nodriver")
    panel = make.panel(lab)
    stats = lab.stats()
    assert stats.last_update is None and all(v is None for v in stats.values())
    html = panel.stats_table.value
    assert html.count("<tr class='unset'") == len(stats) == 16  # QEMU 10.0 reports 16 stats
    assert html.count(f"<td class='mono'>{UNSET}</td>") == 16
    assert "never (last-update 0)" in panel.last_update.value
    assert panel.doctor.verdict == lab.doctor().verdict == "polling-off"

    front_end_sets(panel.interval_slider, value=1)
    wait_for(lambda: panel.doctor.verdict == "never-reported", "the doctor's verdict for a guest without driver")
    assert panel.doctor.severity == "error"
    assert "no working balloon driver" in panel.doctor.value
    assert panel.plot.point_count == 0  # nothing reported: nothing plotted


def test_virtqueue_view_decodes_the_last_report_byte_for_byte(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    assert panel.virtqueue is not None
    view = panel.virtqueue
    front_end_sets(panel.virtqueue_box, selected_index=0)  # the user opens the view
    wait_for(lambda: view.entries, "the boot-time report on the stats queue")
    stats = lab.stats()  # polling is off: the boot report is still the last one
    decoded = {e.name: e.value for e in view.entries if not e.ignored}
    assert decoded == {k: v for k, v in stats.items() if v is not None}
    assert all(len(e.hex) == 20 for e in view.entries)
    assert view.holder == "device"
    assert "data-holder='device'" in view.value

    # The next report (polling on) replaces it, and the view follows.
    front_end_sets(panel.interval_slider, value=1)
    first = view.last_report["seq"]
    wait_for(lambda: view.last_report["seq"] > first, "a new report on the stats queue", timeout=20)


def test_virtqueue_view_shows_a_buggy_guest_keeping_the_buffer(make) -> None:
    lab = make.lab(guest="buggy")
    panel = make.panel(lab)
    view = panel.virtqueue
    front_end_sets(panel.virtqueue_box, selected_index=0)
    wait_for(lambda: view.entries, "the buggy guest's boot report")
    assert view.holder == "device"
    front_end_sets(panel.interval_slider, value=1)
    # The device hands the buffer back to ask for stats; this guest never returns it: no report follows, and
    # only the request moves the holder.
    wait_for(lambda: view.holder == "guest", "the stats buffer to stay with the guest")
    assert "data-holder='guest'" in view.value
    assert view.last_request is not None and view.last_request["seq"] > view.last_report["seq"]


def test_virtqueue_trace_is_read_only_while_the_view_is_open(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    view = panel.virtqueue
    assert not panel.virtqueue_open and panel.virtqueue_box.selected_index is None  # collapsed at first
    front_end_sets(panel.interval_slider, value=1)
    seen = lab.stats().last_update_seconds
    wait_for(lambda: panel.plot.last_time and panel.plot.last_time > seen, "a report while the view is closed",
             timeout=20)
    assert panel.wait_idle()
    assert view.exchanges == 0 and view.last_report is None  # no trace was read for it

    front_end_sets(panel.virtqueue_box, selected_index=0)
    wait_for(lambda: view.exchanges >= 3 and view.last_report is not None, "the trace once the view opens")
    front_end_sets(panel.virtqueue_box, selected_index=None)  # closed again: the view stops following
    assert panel.wait_idle()
    frozen = view.exchanges
    now = lab.stats().last_update_seconds
    wait_for(lambda: panel.plot.last_time and panel.plot.last_time > now, "another report", timeout=20)
    assert panel.wait_idle()
    assert view.exchanges == frozen


def test_connected_lab_has_no_virtqueue_view(make) -> None:
    emulated = make.lab(guest="linux")
    lab = balloonlab.connect(emulated.socket_path)
    try:
        panel = make.panel(lab)
        assert panel.virtqueue is None
        assert "connected" in panel.header.value
    finally:
        panel.close()
        lab.close()


def test_panel_stays_bounded_over_two_hours_of_virtual_time(make) -> None:
    lab = make.lab(guest="linux", clock="virtual")
    panel = make.panel(lab, max_points=50, max_events=20)
    panel.plot.max_markers = 10
    lab.polling_interval = 1
    for step in range(2 * 3600 // 5):  # 2 h of polling every second, in 5 s steps (each step is a QMP round trip)
        lab.advance(5)
        if step % 60 == 0:  # run-state events along the way
            lab.qmp("stop")
            lab.qmp("cont")
    final = lab.stats().last_update_seconds  # (this read also reaches the panel, as any read does)
    wait_for(lambda: panel.plot.last_time == final, "the panel to plot the device's last report")
    assert panel.wait_idle(30)
    assert panel.plot.point_count == 50
    assert len(panel.plot.lines.x) == 50 and panel.plot.lines.y.shape == (4, 50)
    assert len(panel.events) == 20
    assert panel.events.value.count("<tr class=") == 20
    assert panel.plot.marker_count() <= 3 * panel.plot.max_markers
    assert panel.plot.marker_count("state") == panel.plot.max_markers  # 2 x 24 STOP/RESUME, the newest kept
    cost = panel.update_cost()
    assert cost["updates"] > cost["batches"] > 0  # a burst is batched, not rendered update by update
    # On a virtual clock the panel asks lab.doctor(), which judges age by the device's clock: fresh after 2 h.
    wait_for(lambda: panel.doctor.verdict == "healthy", "the doctor's verdict on the virtual clock")
    assert "virtual clock" in panel.last_update.value


def test_plot_starts_with_what_the_lab_history_recorded(make) -> None:
    lab = make.lab(guest="linux", history=True)
    lab.polling_interval = 1
    # Three reports with distinct timestamps (last-update has whole seconds: the boot report and the first
    # poll can share one, and the plot has one point per time).
    wait_for(lambda: len({t for t in lab.history.column("last-update") if t}) >= 3,
             "the history to record three reports at distinct times", timeout=20)
    recorded = {t for t in lab.history.column("last-update") if t}
    panel = make.panel(lab)
    assert panel.plot.point_count >= 3  # at once, before any live update
    assert set(panel.plot.lines.x.astype("datetime64[s]").astype(int)) <= recorded | {panel.plot.last_time}


def test_close_unsubscribes_and_closes_every_widget(make) -> None:
    lab = make.lab(guest="linux", history=False)  # the panel is the only reason to follow
    panel = make.panel(lab)
    raw = make.raw(lab)
    parts = [panel, panel.interval_slider, panel.target_slider, panel.stats_table, panel.plot.figure,
             panel.plot.lines, panel.events, panel.virtqueue, panel.status_line]
    assert all(w.comm is not None for w in parts)
    wait_for(lambda: lab.following, "the lab's follower to run for the panel")

    panel.close()

    assert panel.closed and all(w.comm is None for w in parts)
    # The panel was the only subscriber: with it gone the lab stops following (nothing polls for nobody).
    wait_for(lambda: not lab.following, "the lab to stop following once the panel unsubscribed")
    applied = panel.update_cost()["updates"]
    seen: list[Any] = []
    unsubscribe = lab.subscribe(seen.append)  # proves the lab did deliver the change below
    try:
        raw.execute("qom-set", {"path": lab.device_path, "property": INTERVAL, "value": 5})
        wait_for(lambda: any(u.kind == "interval" and u.interval == 5 for u in seen), "the lab to report 5 s")
    finally:
        unsubscribe()
    assert panel.update_cost()["updates"] == applied
    assert panel.interval_slider.value == 0
    panel.close()  # idempotent


def test_closing_the_lab_freezes_the_panel_with_its_last_state(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    front_end_sets(panel.interval_slider, value=1)
    wait_for(lambda: panel.doctor.verdict == "healthy", "a healthy verdict while the lab is live")
    panel.wait_idle()
    table, points = panel.stats_table.value, panel.plot.point_count
    lab.close()
    wait_for(lambda: panel.frozen, "the panel to freeze")
    assert panel.status.startswith("closed: the lab was closed (lab.close())")
    assert panel.interval_slider.disabled and panel.target_slider.disabled
    assert "balloonlab-closed" in panel._dom_classes and not panel.connected and not panel.closed
    assert panel.stats_table.value == table and panel.plot.point_count == points  # the last numbers stay
    wait_for(lambda: not panel._pump.alive, "the panel's thread to end")
    # The doctor no longer claims a live guest, and keeps saying so.
    assert panel.doctor.verdict == "closed" and "The lab is closed" in panel.doctor.message
    panel._tick()
    assert panel.doctor.verdict == "closed"
    panel.close()
    assert panel.closed


def test_doctor_follows_an_interval_change_at_once_on_a_virtual_clock(make) -> None:
    # A doctor_period longer than the test: a verdict that waited for a timer would never change.
    lab = make.lab(guest="linux", clock="virtual")
    panel = make.panel(lab, doctor_period=3600)
    assert panel.doctor.verdict == "polling-off"
    lab.polling_interval = 2  # from code, as a notebook cell does
    wait_for(lambda: panel.doctor.verdict != "polling-off", "the doctor to notice the interval change")
    lab.advance("10s")
    wait_for(lambda: panel.doctor.verdict == "healthy", "the doctor to follow the new reports")
    assert "every 2 s" in panel.doctor.message
    assert panel.doctor.verdict == lab.doctor().verdict


def test_doctor_never_lags_behind_the_interval_label(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    assert panel.doctor.verdict == "polling-off"
    seen: list[str] = []

    def label_changed(change: dict) -> None:
        if "every 3 s" in change["new"] and "applying" not in change["new"]:
            seen.append(panel.doctor.verdict)

    panel.interval_control.label.observe(label_changed, "value")
    front_end_sets(panel.interval_slider, value=3)
    wait_for(lambda: seen, "the label to confirm 3 s")
    assert seen[0] != "polling-off"


def test_target_slider_follows_a_target_set_from_code(make) -> None:
    lab = make.lab(guest="linux", memory="512M")
    panel = make.panel(lab)
    updates: list[Any] = []
    unsubscribe = lab.subscribe(updates.append)
    try:
        assert lab.target is None and panel.target_slider.value == 512
        lab.set_target("256M")
        assert lab.target == 256 * MiB
        wait_for(lambda: panel.target_slider.value == 256, "the slider to show the target set from code")
        assert any(u.kind == "target" and u.target == 256 * MiB for u in updates)
        lab.qmp("balloon", value=300 * MiB)  # any balloon command through the lab counts
        wait_for(lambda: panel.target_slider.value == 300, "the slider to follow lab.qmp('balloon')")
    finally:
        unsubscribe()
    assert lab.target == 300 * MiB
    # A second panel on the same lab starts at the remembered target, not at actual.
    assert make.panel(lab).target_slider.value == 300


def test_panel_parts_carry_css_classes_for_the_browser(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    expected = {
        "balloonlab-panel": panel, "balloonlab-interval": panel.interval_slider,
        "balloonlab-target": panel.target_slider, "balloonlab-stats": panel.stats_table,
        "balloonlab-last-update": panel.last_update, "balloonlab-doctor": panel.doctor,
        "balloonlab-events": panel.events, "balloonlab-virtqueue": panel.virtqueue,
        "balloonlab-plot": panel.plot, "balloonlab-status": panel.status_line,
        "balloonlab-actual": panel.target_control.actual_label,
        "balloonlab-interval-label": panel.interval_control.label,
    }
    for css, widget in expected.items():
        assert css in widget._dom_classes, css


def test_a_panel_on_a_closed_lab_says_so_instead_of_raising(make) -> None:
    lab = make.lab(guest="linux")
    lab.close()
    panel = make.panel(lab)
    wait_for(lambda: panel.frozen, "the panel to notice the lab is closed")
    assert panel.status.startswith("closed: ")
    assert panel.interval_slider.disabled and panel.target_slider.disabled


def test_doctor_and_event_log_follow_a_pause_made_elsewhere(make) -> None:
    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    raw = make.raw(lab)
    front_end_sets(panel.interval_slider, value=1)
    wait_for(lambda: panel.doctor.verdict == "healthy", "a healthy verdict once polling runs")

    raw.execute("stop")
    wait_for(lambda: panel.doctor.verdict == "paused", "the doctor to see the VM paused")
    assert panel.doctor.verdict == lab.doctor().verdict
    assert "data-event='STOP'" in panel.events.value

    raw.execute("cont")
    wait_for(lambda: panel.doctor.verdict == "healthy", "the doctor to see the VM running again")
    assert "data-event='RESUME'" in panel.events.value
    panel.wait_idle()
    assert panel.plot.marker_count("state") == 2


def test_a_qemu_restarted_paused_shows_paused_after_the_reconnect(make, tmp_path) -> None:
    """No STOP event tells a panel that the QEMU it reconnected to started paused: it must ask (query-status)."""
    socket_path = str(tmp_path / "qmp.sock")
    first = make.lab(guest="linux", socket_path=socket_path)
    lab = balloonlab.connect(socket_path)  # the panel's lab: survives the QEMU behind it
    try:
        panel = make.panel(lab)
        front_end_sets(panel.interval_slider, value=1)
        wait_for(lambda: panel.doctor.verdict == "healthy", "a healthy verdict while the first QEMU runs")
        first.close()  # that QEMU goes away
        wait_for(lambda: not panel.connected, "the panel to see the QEMU gone")
        make.lab(guest="linux", socket_path=socket_path, paused=True)  # a new one on the same socket, paused
        lab.reconnect()
        wait_for(lambda: panel.connected, "the panel to see the lab connected again")
        wait_for(lambda: panel.doctor.verdict == "paused", "the doctor to see the new VM paused")
        assert panel.doctor.verdict == lab.doctor().verdict
    finally:
        lab.close()


def test_a_disconnect_and_a_reconnect_in_one_batch_end_connected(make) -> None:
    from balloonlab.client.updates import LabUpdate

    lab = make.lab(guest="linux")
    panel = make.panel(lab)
    assert panel.wait_idle()
    release = threading.Event()
    panel._pump.submit(lambda: release.wait(10))  # hold the pump: the two updates below form one batch
    try:
        panel._on_update(LabUpdate("disconnected", error="QEMU restarted"))
        panel._on_update(LabUpdate("interval", interval=3))  # the lab, reconnected, reports again
    finally:
        release.set()
    assert panel.wait_idle()
    assert panel.connected and not panel.interval_slider.disabled
    assert "reconnected" in panel.status_line.value
