"""The memory time series: free, available and total memory and disk caches, with polling and balloon marks.

Drawn with bqplot (a native widget: plain trait sync, no custom JS, works in Voila and from any thread).  The
window is bounded: the last ``max_points`` reports live in a fixed numpy ring, and each render sends at most that
many points, so an open panel costs the same after an hour as after a minute.  Samples are cheap to add (one
row written); :meth:`render` sends the arrays once per batch, inside ``hold_sync`` (one message per mark).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import bqplot
import ipywidgets as widgets
import numpy as np
from traitlets import Int, observe, validate

MiB = float(1 << 20)

#: (stat key, legend label, colour) of each plotted series.
SERIES = (
    ("free-memory", "free", "#1f77b4"),
    ("available-memory", "available", "#2ca02c"),
    ("total-memory", "total", "#7f7f7f"),
    ("disk-caches", "disk caches", "#ff7f0e"),
)

#: marker kinds: (legend label, bqplot marker, colour)
MARKERS = {
    "interval": ("polling changed", "triangle-down", "#d62728"),
    "balloon": ("BALLOON_CHANGE", "diamond", "#9467bd"),
    "state": ("run state", "square", "#8c564b"),
}


class _Ring:
    """A fixed-size ring of float rows: O(1) append, O(n) ordered copy, no allocation per sample."""

    def __init__(self, capacity: int, width: int) -> None:
        self.data = np.full((capacity, width), np.nan)
        self.head = 0  # next row to write
        self.count = 0

    def append(self, row: tuple[float, ...]) -> None:
        self.data[self.head] = row
        self.head = (self.head + 1) % len(self.data)
        self.count = min(self.count + 1, len(self.data))

    def ordered(self) -> np.ndarray:
        if self.count < len(self.data):
            return self.data[: self.count]
        return np.concatenate((self.data[self.head:], self.data[: self.head]))

    def last(self) -> np.ndarray | None:
        return self.data[self.head - 1] if self.count else None


#: The series drawn a second time, dashed, on top of the others: on a Linux guest free and available memory are
#: often within a few MiB of each other, and the later line would hide the earlier one completely.
DASHED = "free-memory"


def _key_html() -> str:
    lines = "".join(f"<span style='color:{colour}'>{'&#9476;&#9476;' if key == DASHED else '&#9473;&#9473;'} "
                    f"{label}</span>&nbsp;&nbsp; " for key, label, colour in SERIES)
    shapes = {"triangle-down": "&#9660;", "diamond": "&#9670;", "square": "&#9632;"}
    marks = "".join(f"<span style='color:{colour}'>{shapes[marker]} {label}</span>&nbsp;&nbsp; "
                    for label, marker, colour in MARKERS.values())
    return f"<div style='font-size: 90%'>{lines}&nbsp; {marks}</div>"


def _dates(seconds: np.ndarray) -> np.ndarray:
    return np.round(seconds * 1000.0).astype("int64").astype("datetime64[ms]")


#: Tick steps (seconds) the time axis may use: whole seconds, minutes and hours people count in.
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: The time axis's labels: every tick a whole step of TICK_STEPS, so "%H:%M:%S" never repeats a label within a
#: day; a window of a day or more (24 h of virtual time) names the day too.
TIME_FORMAT = "%H:%M:%S"
DAYS_FORMAT = "%m-%d %H:%M"


def time_format(span: float) -> str:
    """The tick label format for a window of ``span`` seconds."""
    return TIME_FORMAT if span < 86400 else DAYS_FORMAT


def time_ticks(first: float, last: float, most: int = 7) -> np.ndarray:
    """Tick positions (seconds since the epoch) for a window from ``first`` to ``last``: at most ``most``, on
    whole multiples of one of :data:`TICK_STEPS`.

    Why not leave it to d3: on a window of a few seconds d3 puts ticks every 500 ms, and a "%H:%M:%S" label then
    repeats ("04:53:43 04:53:43 04:53:44"); its default multi-scale format instead mixes ":40 :45 04:29".
    """
    if not (math.isfinite(first) and math.isfinite(last)) or last < first:
        return np.array([], dtype=float)
    span = last - first
    step = next((s for s in TICK_STEPS if span / s <= most - 1), None)
    if step is None:  # longer than TICK_STEPS plan for: whole days
        step = 86400 * math.ceil(span / 86400 / (most - 1))
    start = math.ceil(first / step) * step
    return np.arange(start, last + 1e-6, step, dtype=float)


class MemoryPlot(widgets.VBox):
    """Guest memory over time (MiB) with markers for polling changes, balloon changes and run-state events."""

    max_points = Int(600, help="Reports kept and drawn (the oldest drop out of the window).")
    max_markers = Int(100, help="Markers kept per kind.")
    ram_size = Int(0, help="The VM's RAM in bytes: markers are drawn at this height.")

    def __init__(self, **kwargs: Any) -> None:
        # Before the traits are set: max_points=... / max_markers=... resize these.
        self._ring = _Ring(self.max_points, 1 + len(SERIES))
        self._marks: dict[str, deque[float]] = {k: deque(maxlen=self.max_markers) for k in MARKERS}
        self._dirty = True
        super().__init__(**kwargs)
        self.add_class("balloonlab-plot")
        self.x_scale = bqplot.DateScale()
        self.y_scale = bqplot.LinearScale(min=0.0)
        scales = {"x": self.x_scale, "y": self.y_scale}
        empty = np.array([], dtype="datetime64[ms]")
        self.lines = bqplot.Lines(
            x=empty, y=np.empty((len(SERIES), 0)), scales=scales, labels=[s[1] for s in SERIES],
            colors=[s[2] for s in SERIES], display_legend=False, stroke_width=1.5,
        )
        dashed = next(i for i, s in enumerate(SERIES) if s[0] == DASHED)
        self._dashed_row = dashed
        #: ``DASHED`` again, dashed and on top, so that both it and a line right over it stay visible.
        self.dashed_line = bqplot.Lines(
            x=empty, y=np.array([]), scales=scales, labels=[SERIES[dashed][1]], colors=[SERIES[dashed][2]],
            display_legend=False, stroke_width=2.0, line_style="dashed",
        )
        self.markers = {
            kind: bqplot.Scatter(
                x=empty, y=np.array([]), scales=scales, marker=marker, colors=[colour], labels=[label],
                display_legend=False, default_size=48,
            )
            for kind, (label, marker, colour) in MARKERS.items()
        }
        self.figure = bqplot.Figure(
            marks=[self.lines, self.dashed_line, *self.markers.values()],
            axes=[bqplot.Axis(scale=self.x_scale, label="time", tick_format=TIME_FORMAT,
                              tick_values=np.array([], dtype="datetime64[ms]")),
                  bqplot.Axis(scale=self.y_scale, side="left", label="MiB", tick_format=".0f")],
            title="guest memory", animation_duration=0,
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=widgets.Layout(width="100%", height="320px"),
        )
        self.x_axis: bqplot.Axis = self.figure.axes[0]
        # The key lives outside the SVG: an in-plot legend would hide the very lines it names.
        self.key = widgets.HTML(_key_html())
        self.key.add_class("balloonlab-plot-key")
        self.children = [self.figure, self.key]

    @validate("max_points", "max_markers")
    def _valid_bound(self, proposal: dict) -> int:
        if proposal["value"] < 2:
            raise ValueError(f"{proposal['trait'].name} must be at least 2")
        return proposal["value"]

    @observe("max_points")
    def _resize_points(self, change: dict) -> None:
        kept = self._ring.ordered()[-change["new"]:]
        self._ring = _Ring(change["new"], kept.shape[1])
        for row in kept:
            self._ring.append(tuple(row))
        self._dirty = True

    @observe("max_markers")
    def _resize_markers(self, change: dict) -> None:
        self._marks = {k: deque(v, maxlen=change["new"]) for k, v in self._marks.items()}
        self._dirty = True

    @property
    def point_count(self) -> int:
        """Reports currently kept (and drawn after the next render)."""
        return self._ring.count

    def marker_count(self, kind: str | None = None) -> int:
        return sum(len(v) for k, v in self._marks.items() if kind in (None, k))

    @property
    def last_time(self) -> float | None:
        """Seconds since the epoch of the newest sample."""
        row = self._ring.last()
        return None if row is None else float(row[0])

    def add_sample(self, when: float, stats: Mapping[str, int | None]) -> None:
        """One report at ``when`` (seconds since the epoch); unset stats become gaps."""
        row = [when]
        for key, _label, _colour in SERIES:
            value = stats.get(key)
            row.append(np.nan if value is None else value / MiB)
        self._ring.append(tuple(row))
        self._dirty = True

    def add_marker(self, when: float, kind: str) -> None:
        """A mark at ``when`` of kind "interval", "balloon" or "state"."""
        self._marks[kind].append(when)
        self._dirty = True

    def render(self) -> bool:
        """Send what changed since the last render (one message per mark); False when nothing had changed."""
        if not self._dirty:
            return False
        self._dirty = False
        data = self._ring.ordered()
        x, y = _dates(data[:, 0]), data[:, 1:].T.astype(np.float32)  # MiB: float32 is exact enough, half the bytes
        with self.lines.hold_sync():
            self.lines.x, self.lines.y = x, y
        with self.dashed_line.hold_sync():
            self.dashed_line.x, self.dashed_line.y = x, y[self._dashed_row]
        oldest = data[0, 0] if len(data) else -np.inf
        top = self.ram_size / MiB if self.ram_size else (np.nanmax(data[:, 1:]) if len(data) else 0.0)
        first, last = (data[0, 0], data[-1, 0]) if len(data) else (np.inf, -np.inf)
        for kind, scatter in self.markers.items():
            times = np.fromiter((t for t in self._marks[kind] if t >= oldest), dtype=float)
            if len(times):
                first, last = min(first, times.min()), max(last, times.max())
            if len(times) == len(scatter.x):
                if len(times) == 0 or np.array_equal(_dates(times), scatter.x):
                    continue
            with scatter.hold_sync():
                scatter.x = _dates(times)
                scatter.y = np.full(len(times), top)
        ticks = _dates(time_ticks(float(first), float(last)))
        current = self.x_axis.tick_values
        if current is None or not np.array_equal(ticks, current):  # a message only when the ticks move
            with self.x_axis.hold_sync():
                self.x_axis.tick_values = ticks
                self.x_axis.tick_format = time_format(float(last - first) if len(ticks) else 0.0)
        return True
