"""The panel's parts on their own (no lab): the update pump, the slider binding, the views' rendering and bounds.

The lab-driven tests are in test_widgets_panel.py.  Under plain pytest ipywidgets 8 gives every widget a
DummyComm; a front-end move is simulated with ``_handle_msg`` exactly as the browser would send it.
"""

from __future__ import annotations

import datetime as dt
import threading

import ipywidgets as widgets
import pytest

from balloonlab.stats import BY_KEY, STATS, UNSET, GuestStats, stats_for_version
from balloonlab.widgets import (DeviceBinding, EventLog, LastUpdateView, MemoryPlot, StatsTable, VirtqueueView,
                                decode_report)
from balloonlab.client.pump import UpdatePump
from tests.helpers import wait_until


def front_end_sets(widget: widgets.Widget, **state) -> None:
    """Deliver a state update as the browser does (comm message ``update``)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state, "buffer_paths": []}},
                        "buffers": []})


def wire_stats(values: dict[str, int | None], last_update: int, version=(10, 0)) -> GuestStats:
    """A guest-stats answer as QEMU sends it (every stat of that version; unset ones as 2**64-1)."""
    stats = {s.qmp_key: (UNSET if values.get(s.key) is None else values[s.key]) for s in stats_for_version(version)}
    return GuestStats({"stats": stats, "last-update": last_update})


@pytest.fixture
def closing():
    """Widgets made by a test, closed afterwards."""
    made: list[widgets.Widget] = []
    yield made
    for w in made:
        w.close()


# -- UpdatePump ------------------------------------------------------------------------------------------------
def test_pump_batches_what_arrives_while_busy_and_runs_requests_first() -> None:
    release = threading.Event()
    batches: list[list[int]] = []
    order: list[str] = []

    def apply(items: list[int]) -> None:
        order.append("batch")
        batches.append(items)
        if len(batches) == 1:
            release.wait(10)

    pump = UpdatePump(apply, min_gap=0.0)
    try:
        pump.put(0)
        deadline_ok = wait_until(lambda: len(batches) == 1, 10, interval=0.01)
        assert deadline_ok
        for i in range(1, 51):  # the first batch is still being applied: these must form one batch
            pump.put(i)
        pump.submit(lambda: order.append("request"))
        release.set()
        assert pump.wait_idle(10)
        assert batches == [[0], list(range(1, 51))]
        assert order == ["batch", "request", "batch"]
        assert pump.items == 51 and pump.batches == 2
    finally:
        release.set()
        pump.stop()
    assert not pump.alive


def test_pump_survives_a_failing_update_and_reports_it() -> None:
    errors: list[BaseException] = []
    seen: list[int] = []

    def apply(items: list[int]) -> None:
        if items == [1]:
            raise RuntimeError("boom")
        seen.extend(items)

    pump = UpdatePump(apply, on_error=errors.append, min_gap=0.0)
    try:
        pump.put(1)
        assert pump.wait_idle(10)
        pump.put(2)
        assert pump.wait_idle(10)
    finally:
        pump.stop()
    assert [str(e) for e in errors] == ["boom"]
    assert seen == [2]


# -- DeviceBinding ---------------------------------------------------------------------------------------------
def test_binding_turns_front_end_moves_into_requests_and_device_values_into_moves(closing) -> None:
    slider = widgets.IntSlider(min=0, max=60, continuous_update=False)
    closing.append(slider)
    requests: list[int] = []
    binding = DeviceBinding(slider, requests.append)

    binding.show(5)  # the device says 5: the slider follows, nothing is requested
    assert slider.value == 5 and requests == []

    front_end_sets(slider, value=9)  # the user releases the slider at 9
    assert requests == [9] and binding.pending

    binding.show(5)  # a stale device report while the request is in flight: the slider stays at 9
    assert slider.value == 9
    binding.refused(9)  # QEMU said no: back to the device's value
    assert slider.value == 5 and not binding.pending

    front_end_sets(slider, value=20)  # two quick moves: 20, then 30
    front_end_sets(slider, value=30)
    assert requests == [9, 20, 30]
    binding.applied(20)  # the first one lands: the slider stays on the user's newest choice
    assert slider.value == 30 and binding.pending
    binding.applied(30)
    assert slider.value == 30 and binding.device == 30 and not binding.pending

    binding.show(300)  # beyond the slider's range (set elsewhere): widen the range, never clamp
    assert slider.value == 300 and slider.max == 300 and requests == [9, 20, 30]


# -- StatsTable / LastUpdateView -------------------------------------------------------------------------------
def test_stats_table_shows_values_units_human_form_and_change(closing) -> None:
    table = StatsTable()
    closing.append(table)
    first = wire_stats({"free-memory": 400 << 20, "total-memory": 470 << 20, "minor-faults": 100}, 1_700_000_000)
    second = wire_stats({"free-memory": 300 << 20, "total-memory": 470 << 20, "minor-faults": 250}, 1_700_000_002)
    assert table.push(first)
    assert not table.push(first)  # the same report again is not new
    assert table.push(second)
    table.render()
    html = table.value
    assert "<tr data-stat='free-memory'>" in html
    assert f"<td class='mono'>{300 << 20}</td>" in html and "300.0 MiB" in html
    assert "\u2212100.0 MiB" in html  # free memory fell by 100 MiB since the previous report
    assert "+150" in html  # minor faults: a count, not a size
    # Every stat QEMU 10.0 reports has a row; the unset ones say so, with the wire value.
    assert html.count("<tr") == 1 + 16
    assert html.count("class='unset'") == 13
    assert f"<td class='mono'>{UNSET}</td>" in html
    for info in STATS:
        assert f"data-stat='{info.key}'" in html


def test_stats_table_render_sends_only_when_something_changed(closing) -> None:
    table = StatsTable()
    closing.append(table)
    changes: list[str] = []
    table.observe(lambda c: changes.append(c["new"]), "value")
    report = wire_stats({"free-memory": 1 << 30}, 1_700_000_000)
    table.push(report)
    table.render()
    table.push(report)
    table.render()
    assert len(changes) == 1


def test_last_update_view_says_never_or_when_and_how_long_ago(closing) -> None:
    view = LastUpdateView()
    closing.append(view)
    assert "not reported" in view.value
    view.last_update = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=125)
    assert "UTC</span>" in view.value and "(2 min 5 s ago)" in view.value
    view.virtual_clock = True
    assert "(virtual clock)" in view.value


# -- EventLog / MemoryPlot: bounded ----------------------------------------------------------------------------
def test_event_log_keeps_the_newest_entries_only(closing) -> None:
    log = EventLog(max_events=5)
    closing.append(log)
    for i in range(12):
        log.add_event({"timestamp": {"seconds": 1_700_000_000 + i, "microseconds": 0}, "event": "BALLOON_CHANGE",
                       "data": {"actual": (500 - i) << 20}})
    log.render()
    assert len(log) == 5
    assert log.value.count("data-event='BALLOON_CHANGE'") == 5
    assert "489.0 MiB" in log.value and "495.0 MiB" not in log.value  # newest kept, oldest dropped
    log.max_events = 2
    assert len(log) == 2


def test_memory_plot_window_is_bounded_and_unset_values_are_gaps(closing) -> None:
    plot = MemoryPlot(max_points=20, max_markers=4, ram_size=512 << 20)
    closing.append(plot)
    for i in range(100):
        plot.add_sample(1_700_000_000 + i, {"free-memory": (300 + i) << 20, "total-memory": 470 << 20,
                                            "available-memory": None, "disk-caches": 2 << 20})
        plot.add_marker(1_700_000_000 + i, "interval")
    assert plot.render()
    assert not plot.render()  # nothing new: nothing sent
    assert plot.point_count == 20 and len(plot.lines.x) == 20
    assert plot.lines.y.shape == (4, 20)
    assert plot.lines.y[0][-1] == 399.0  # MiB, newest last
    assert all(v != v for v in plot.lines.y[1])  # available-memory unset: NaN (a gap)
    assert plot.marker_count("interval") == 4 and len(plot.markers["interval"].x) == 4
    assert set(plot.markers["interval"].y) == {512.0}


# -- VirtqueueView / decode_report -----------------------------------------------------------------------------
def _entry(tag: int, value: int) -> str:
    return (tag.to_bytes(2, "little") + value.to_bytes(8, "little")).hex()


def test_decode_report_splits_entries_marks_unknown_tags_and_a_partial_tail() -> None:
    hex_bytes = _entry(4, 123 << 20) + _entry(42, 7) + "abcd"
    entries, trailing = decode_report(hex_bytes)
    assert [(e.tag, e.name, e.value, e.ignored) for e in entries] == [(4, "free-memory", 123 << 20, False),
                                                                      (42, None, 7, True)]
    assert trailing == "abcd"
    # The device's own naming wins where it matches the bytes (e.g. QEMU 9.1 ignores tag 10).
    entries, _ = decode_report(_entry(10, 0), [{"tag": 10, "name": "oom-kills", "value": 0, "ignored": True}])
    assert entries[0].ignored and entries[0].name == "oom-kills"


def test_virtqueue_view_keeps_the_last_report_and_the_holder(closing) -> None:
    view = VirtqueueView()
    closing.append(view)
    report = {"seq": 3, "kind": "report", "holder": "device", "bytes": _entry(5, 470 << 20),
              "entries": [{"tag": 5, "name": "total-memory", "value": 470 << 20, "ignored": False}]}
    view.show({"next": 4, "holder": "device", "exchanges": [report]})
    view.show({"next": 5, "holder": "guest", "exchanges": [{"seq": 4, "kind": "request", "holder": "guest",
                                                          "bytes": "", "entries": []}]})
    assert view.holder == "guest" and view.next_seq == 5
    assert [(e.name, e.value) for e in view.entries] == [("total-memory", 470 << 20)]
    assert "data-holder='guest'" in view.value and "470.0 MiB" in view.value
    assert BY_KEY["total-memory"].tag == 5


def test_time_axis_ticks_are_whole_steps_with_distinct_labels() -> None:
    import datetime as dt

    from balloonlab.widgets.plot import MemoryPlot, time_format, time_ticks

    def labels(ticks):
        fmt = time_format(ticks[-1] - ticks[0])
        return [dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime(fmt) for t in ticks]

    start = 1_764_131_623.0  # a whole second
    for span in (0, 1, 6, 50, 600, 7200, 3 * 86400):
        ticks = time_ticks(start, start + span)
        assert 1 <= len(ticks) <= 7 and all(start <= t <= start + span for t in ticks), span
        assert all(t == int(t) for t in ticks) and len(set(labels(ticks))) == len(ticks), span
    plot = MemoryPlot()
    try:
        assert not any(m.display_legend for m in plot.figure.marks)  # the key sits below the plot, not on it
        for i in range(6):  # a few seconds of reports: d3 alone would tick every 500 ms, repeating labels
            plot.add_sample(start + i, {"free-memory": 100 << 20})
        plot.render()
        shown = plot.x_axis.tick_values.astype("datetime64[s]").astype(int)
        assert list(shown) == [start + i for i in range(6)]
    finally:
        plot.close()


def test_event_log_renders_only_after_a_change(closing) -> None:
    log = EventLog(max_events=100)
    closing.append(log)
    assert not log.render()  # the empty log was rendered when made
    log.add_note("polling interval 2 s", 1_700_000_000.0, kind="interval")
    assert log.render() and "data-event='interval'" in log.value
    assert not log.render()  # a batch without events: the rows are not even joined again
    log.max_events = 1
    assert "data-event='interval'" in log.value


def test_free_memory_is_drawn_dashed_on_top_so_a_line_right_over_it_stays_visible():
    MiB = 1 << 20
    from balloonlab.widgets.plot import DASHED, SERIES

    plot = MemoryPlot(max_points=10)
    for i in range(3):
        plot.add_sample(1000.0 + i, {"free-memory": 400 * MiB, "available-memory": 400 * MiB,
                                     "total-memory": 480 * MiB, "disk-caches": 2 * MiB})
    plot.render()
    marks = plot.figure.marks
    assert marks.index(plot.dashed_line) > marks.index(plot.lines)
    assert plot.dashed_line.line_style == "dashed" and plot.lines.line_style == "solid"
    row = [s[0] for s in SERIES].index(DASHED)
    assert list(plot.dashed_line.y) == list(plot.lines.y[row]) == [400.0] * 3
    assert list(plot.dashed_line.x) == list(plot.lines.x)
