"""``FleetPanel(host)``: a host of VMs as one widget -- where the host's memory went, and one row per VM.

* The host bar: the host's RAM as one stacked bar, each VM's RSS (what its QEMU really holds), then free, then
  what went to swap (drawn past the end of RAM, which is what overcommit means).
* One row per VM: name, ``actual``, RSS, the guest's free and available memory (what the guest says), a small
  live plot of free and available, a target slider bound to the device, and the doctor's verdict.

Built the way :class:`~balloonlab.widgets.panel.BalloonPanel` is: every VM's lab updates are queued by
``subscribe`` callbacks on the lab's loop and applied in batches by one
:class:`~balloonlab.client.pump.UpdatePump` thread, which also runs the sliders' requests and, about once a
second, reads the host's usage (``host.usage()``) and re-judges each VM.  Nothing here prints or blocks the loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import Float, Int

from ..client.doctor import diagnose
from ..client.pump import UpdatePump
from ..errors import BalloonError, QMPError
from ..units import format_size
from ._html import SEVERITY_COLOUR, esc, set_if_changed, style_widget
from .controls import MiB, TargetControl
from .live import LiveView
from .panel import RUN_STATE
from .plot import _Ring
from .stats_table import DoctorView

if TYPE_CHECKING:
    from ..client.balloon import Balloon
    from ..client.backend import HostLike
    from ..client.host import HostUsage
    from ..qapi import RunState

log = logging.getLogger("balloonlab.widgets")

#: Colours of the VMs' segments (cycled), then free and swap.
VM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FREE_COLOUR = "#e0e0e0"
SWAP_COLOUR = "#d62728"


class HostBar(widgets.VBox):
    """The host's memory as a stacked horizontal bar: each VM's RSS, free, swap used (MiB)."""

    def __init__(self, names: list[str], total: int) -> None:
        super().__init__()
        self.names = list(names)
        self.x_scale = bqplot.OrdinalScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=total / MiB)
        colours = [VM_COLOURS[i % len(VM_COLOURS)] for i in range(len(names))] + [FREE_COLOUR, SWAP_COLOUR]
        self.labels = [*names, "free", "swap"]
        self.bars = bqplot.Bars(
            x=["host"], y=np.zeros((len(self.labels), 1)), scales={"x": self.x_scale, "y": self.y_scale},
            type="stacked", orientation="horizontal", colors=colours, labels=self.labels, display_legend=False,
            tooltip=bqplot.Tooltip(fields=["y"], formats=[".0f"], labels=["MiB"]),
        )
        self.figure = bqplot.Figure(
            marks=[self.bars],
            # horizontal bars: the categories run down the left side, the sizes along the bottom
            axes=[bqplot.Axis(scale=self.y_scale, side="bottom", label="MiB", tick_format=".0f"),
                  bqplot.Axis(scale=self.x_scale, side="left")],
            title="host memory", animation_duration=0,
            fig_margin={"top": 30, "bottom": 40, "left": 50, "right": 20},
            layout=widgets.Layout(width="100%", height="140px"),
        )
        keys = "".join(f"<span style='color:{c}'>&#9632; {esc(n)}</span>&nbsp;&nbsp; "
                       for n, c in zip(self.labels, colours))
        self.key = widgets.HTML(f"<div style='font-size: 90%'>{keys}</div>")
        self.summary = widgets.HTML()
        self.summary.add_class("balloonlab-host-summary")
        self.children = [self.figure, self.key, self.summary]

    def show(self, usage: HostUsage) -> None:
        values = [usage.rss.get(n, 0) for n in self.names] + [usage.free, usage.swap_used]
        y = (np.array(values, dtype=float) / MiB).reshape(-1, 1)
        if not np.array_equal(y, self.bars.y):
            with self.bars.hold_sync():
                self.bars.y = y
            top = (usage.total + usage.swap_used) / MiB
            if self.y_scale.max != top:
                self.y_scale.max = top
        swap = (f", <b style='color:{SEVERITY_COLOUR['error']}'>swap {esc(format_size(usage.swap_used))}</b>"
                if usage.swap_used else ", no swap used")
        set_if_changed(self.summary, "value",
                       f"RAM {esc(format_size(usage.total))}: VMs hold {esc(format_size(usage.used))}, "
                       f"free {esc(format_size(usage.free))}{swap}")


class Sparkline(widgets.VBox):
    """A small plot of one guest's free and available memory over its last ``points`` reports (MiB)."""

    def __init__(self, ram_size: int, points: int = 120) -> None:
        super().__init__()
        self._ring = _Ring(points, 3)
        self._dirty = False
        self.x_scale = bqplot.LinearScale()
        self.y_scale = bqplot.LinearScale(min=0.0, max=max(1.0, ram_size / MiB))
        self.lines = bqplot.Lines(x=np.array([]), y=np.empty((2, 0)), colors=["#1f77b4", "#2ca02c"],
                                  labels=["free", "available"], scales={"x": self.x_scale, "y": self.y_scale},
                                  stroke_width=1.5)
        self.figure = bqplot.Figure(marks=[self.lines], axes=[], animation_duration=0,
                                    fig_margin={"top": 4, "bottom": 4, "left": 4, "right": 4},
                                    layout=widgets.Layout(width="150px", height="48px"))
        self.children = [self.figure]

    @property
    def point_count(self) -> int:
        return self._ring.count

    def add(self, when: float, free: int | None, available: int | None) -> None:
        self._ring.append((when, np.nan if free is None else free / MiB,
                           np.nan if available is None else available / MiB))
        self._dirty = True

    def render(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        data = self._ring.ordered()
        with self.lines.hold_sync():
            self.lines.x = data[:, 0] - data[-1, 0]  # seconds before the newest report
            self.lines.y = data[:, 1:].T.astype(np.float32)


class FleetRow(widgets.HBox):
    """One VM: name, numbers, sparkline, target slider, doctor."""

    def __init__(self, lab: Balloon, request_target: Callable[[int], None], points: int) -> None:
        super().__init__(layout=widgets.Layout(align_items="center", flex_flow="row wrap",
                                               border_bottom="1px solid var(--jp-border-color2, #e0e0e0)"))
        self.add_class("balloonlab-fleet-row")
        self.name = lab.name
        self.ram_size = lab.ram_size
        self.title = widgets.HTML(f"<b>{esc(lab.name)}</b>", layout=widgets.Layout(width="4em"))
        self.numbers = widgets.HTML(layout=widgets.Layout(width="23em"))
        self.numbers.add_class("balloonlab-fleet-numbers")
        self.sparkline = Sparkline(self.ram_size, points)
        self.target_control = TargetControl(self.ram_size, request_target)
        self.target_slider: widgets.IntSlider = self.target_control.slider
        # the row says actual already: the slider's own "actual:" label would say it twice
        self.target_control.actual_label.layout.display = "none"
        self.doctor = DoctorView(layout=widgets.Layout(width="100%"))
        self.stats: Any = None
        self.interval: int | None = None
        self.rss: int | None = None
        #: the VM's run state, from query-status at start and then STOP/RESUME/SHUTDOWN events (as the lab panel)
        self.run_state: RunState | None = None
        self.children = [self.title, self.numbers, self.sparkline, self.target_control, self.doctor]

    def take_stats(self, stats: Any) -> None:
        seconds = stats.last_update_seconds if stats.last_update is not None else None
        last = self.sparkline._ring.last()
        if seconds is not None and (last is None or seconds > last[0]):
            self.sparkline.add(float(seconds), stats.get("free-memory"), stats.get("available-memory"))
        self.stats = stats

    def render(self) -> None:
        def size(v: int | None) -> str:
            return "&ndash;" if v is None else esc(format_size(v))

        s = self.stats
        free = s.get("free-memory") if s is not None else None
        avail = s.get("available-memory") if s is not None else None
        set_if_changed(self.numbers, "value",
                       f"actual <b>{size(self.target_control.actual)}</b> &middot; RSS <b>{size(self.rss)}</b>"
                       f"<br><span class='muted'>guest free {size(free)} &middot; available {size(avail)}</span>")
        self.sparkline.render()


class FleetPanel(LiveView):
    """A host's VMs, live: ``FleetPanel(host)`` (what ``%balloon host`` and ``%balloon fleet`` show).

    Public parts: ``host_bar`` (:class:`HostBar`), ``rows`` (name -> :class:`FleetRow`), ``target_sliders``
    (name -> ``IntSlider``), ``status_line``.  :meth:`close` unsubscribes and closes every widget it made.
    VMs added to the host after the panel was made are not shown: make a new panel.
    """

    max_rate = Float(4.0, help="Most view updates per second sent to the browser (bursts are batched).")
    points = Int(120, help="Reports kept in each VM's small plot.")

    def __init__(self, host: HostLike, *, max_rate: float = 4.0, points: int = 120, allow_changes: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(max_rate=max_rate, points=points, **kwargs)
        self.host = host
        #: False: the panel only shows (``balloonlab dashboard`` without ``--allow-changes``): sliders disabled,
        #: and a target asked for anyway (a hand-made comm message) is refused here, not in the browser.
        self.allow_changes = allow_changes
        self.add_class("balloonlab-panel")
        self.add_class("balloonlab-fleet")
        self._closed = False
        labs = host.vms
        self.header = widgets.HTML(f"<b>balloonlab</b> &middot; host of {len(labs)} VMs, "
                                   f"RAM {esc(format_size(host.memory))}, {esc(host.clock)} clock")
        self.status_line = widgets.HTML()
        self.status_line.add_class("balloonlab-status")
        self.host_bar = HostBar([lab.name for lab in labs], host.memory)
        self.rows: dict[str, FleetRow] = {}
        for lab in labs:
            self.rows[lab.name] = FleetRow(lab, self._target_request(lab), points)
            self.rows[lab.name].target_slider.disabled = not allow_changes
        self.labs: dict[str, Balloon] = {lab.name: lab for lab in labs}
        self.children = [style_widget(), self.header, self.status_line, self.host_bar, *self.rows.values()]
        self._pump = UpdatePump(self._apply, tick=self._tick, on_error=self._show_error, min_gap=1.0 / max_rate,
                                name="balloonlab-fleet", start=False)
        # Subscribe before the first reads: an update racing them is queued, not lost.
        self._unsubscribe: Callable[[], None] | None = host.subscribe_vms(
            lambda name, update: self._pump.put((name, update)))
        try:
            for name, lab in self.labs.items():
                row = self.rows[name]
                row.interval = lab.polling_interval
                row.run_state = lab.run_state
                row.target_control.actual = lab.actual
                row.target_control.binding.show(round((lab.target or lab.actual) / MiB))
                row.take_stats(lab.stats())
            self._refresh()
        except BaseException:
            self.close()
            raise
        self._set_status("live: updates as the VMs report", "ok")
        self._pump.start()

    @property
    def target_sliders(self) -> dict[str, widgets.IntSlider]:
        return {name: row.target_slider for name, row in self.rows.items()}

    # -- the pump's thread ------------------------------------------------------------------------------------
    def _apply(self, items: list[tuple[str, Any]]) -> None:
        if self._closed:
            return
        for name, u in items:
            row = self.rows.get(name)
            if row is None:
                continue
            if u.kind == "stats" and u.stats is not None:
                row.take_stats(u.stats)
            elif u.kind == "interval" and u.interval is not None:
                row.interval = u.interval
            elif u.kind == "actual" and u.actual is not None:
                row.target_control.actual = u.actual
            elif u.kind == "target" and u.target is not None:
                row.target_control.binding.show(round(u.target / MiB))
            elif u.kind == "event" and u.event is not None and u.event.get("event") == "BALLOON_CHANGE":
                actual = (u.event.get("data") or {}).get("actual")
                if isinstance(actual, int):
                    row.target_control.actual = actual
            elif u.kind == "event" and u.event is not None and u.event.get("event") in RUN_STATE:
                row.run_state = RUN_STATE[u.event["event"]][1]
        self._refresh()

    def _tick(self) -> None:
        if not self._closed:
            self._refresh()

    def _refresh(self) -> None:
        """The host's usage, each VM's RSS and verdict, then one render per view."""
        if self.host.closed:
            self._set_status("the host was closed", "error")
            return
        try:
            usage = self.host.usage()
            now = self.host.wall_time()
        except BalloonError as exc:
            self._set_status(f"could not read the host: {exc}", "error")
            return
        self.host_bar.show(usage)
        for name, row in self.rows.items():
            row.rss = usage.rss.get(name)
            if row.stats is not None and row.interval is not None:
                # a closed lab's VM is gone; an open one's is as its last run-state event said (a paused VM's
                # stats age because QEMU's polling timer stops with the VM clock, which is not "stale")
                state: RunState | None = row.run_state if self.labs[name].connected else "shutdown"
                row.doctor.show(diagnose(row.stats, row.interval, now=now, running=state in (None, "running"),
                                         run_state=state))
            row.render()

    def _target_request(self, lab: Balloon) -> Callable[[int], None]:
        def request(mib: int) -> None:
            self._pump.submit(lambda: self._apply_target(lab, mib))

        return request

    def _apply_target(self, lab: Balloon, mib: int) -> None:
        binding = self.rows[lab.name].target_control.binding
        if not self.allow_changes:
            binding.refused(mib)
            self._set_status(f"{lab.name}: target {mib} MiB not set: this panel only shows (read-only)", "error")
            return
        try:
            lab.set_target(mib * MiB)
        except BalloonError as exc:
            binding.refused(mib)
            why = f"{exc.error_class}: {exc.desc}" if isinstance(exc, QMPError) else str(exc)
            self._set_status(f"{lab.name}: target {mib} MiB refused: {why}", "error")
            return
        binding.applied(mib)
        self._set_status(f"{lab.name}: target {mib} MiB sent; the guest's driver moves actual", "ok")

    def _show_error(self, exc: BaseException) -> None:
        self._set_status(f"{type(exc).__name__}: {exc}", "error")

    def _set_status(self, text: str, severity: str = "info") -> None:
        colour = SEVERITY_COLOUR.get(severity, SEVERITY_COLOUR["info"])
        set_if_changed(self.status_line, "value",
                       f"<span style='color:{colour}' data-severity='{esc(severity)}'>{esc(text)}</span>")
