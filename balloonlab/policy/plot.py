"""Pictures of runs: a run's host memory and each VM's target and actual over time; several runs' host memory on
one chart; the scores as an HTML table.  bqplot (widgets/plot.py draws the live lab the same way)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import bqplot
import ipywidgets as widgets
import numpy as np

from ..units import format_size
from .score import SCORE_KEYS

if TYPE_CHECKING:
    from .runs import PolicyRun

GiB = float(1 << 30)
HOUR = 3600.0
#: a day at a 10 s tick is 8640 points per line; every 4th point is still a smooth line and a quarter the bytes
MAX_POINTS = 2000
_BYTE_KEYS = {"host_used_avg", "host_used_peak", "host_swap_peak", "guest_swap_out"}


def _thin(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    step = max(1, len(x) // MAX_POINTS)
    return (x[::step], *(y[::step] for y in ys))


def _figure(title: str, marks: list, x: bqplot.LinearScale, y: bqplot.LinearScale) -> bqplot.Figure:
    axes = [bqplot.Axis(scale=x, label="hours"), bqplot.Axis(scale=y, side="left", label="GiB", tick_format=".1f")]
    return bqplot.Figure(marks=marks, axes=axes, title=title, legend_location="top-right",
                         layout=widgets.Layout(width="100%", height="320px"),
                         fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20})


def plot_run(run: PolicyRun) -> widgets.VBox:
    """Two charts: the host (RAM, used, swap) and the VMs (actual solid, target dashed, one colour per VM)."""
    df = run.to_dataframe()
    x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale(min=0.0)
    host = df.drop_duplicates("time")
    hx = host["time"].to_numpy(float) / HOUR
    used = host["host_used"].to_numpy(float) / GiB
    swap = host["host_swap_used"].to_numpy(float) / GiB
    total = (host["host_used"] + host["host_free"]).to_numpy(float) / GiB
    hx, used, swap, total = _thin(hx, used, swap, total)
    host_lines = bqplot.Lines(x=hx, y=np.vstack([total, used, swap]), scales={"x": x_scale, "y": y_scale},
                              labels=["host RAM", "used", "swap"], colors=["#7f7f7f", "#1f77b4", "#d62728"],
                              display_legend=True)
    vx_scale, vy_scale = bqplot.LinearScale(), bqplot.LinearScale(min=0.0)
    vm_marks = []
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    for i, (name, rows) in enumerate(df.groupby("vm", sort=False)):
        colour = palette[i % len(palette)]
        t = rows["time"].to_numpy(float) / HOUR
        actual = rows["actual"].to_numpy(float) / GiB
        target = rows["target"].astype(float).fillna(rows["actual"].astype(float)).to_numpy(float) / GiB
        t, actual, target = _thin(t, actual, target)
        vm_marks.append(bqplot.Lines(x=t, y=actual, scales={"x": vx_scale, "y": vy_scale}, colors=[colour],
                                     labels=[f"{name} actual"], display_legend=True))
        vm_marks.append(bqplot.Lines(x=t, y=target, scales={"x": vx_scale, "y": vy_scale}, colors=[colour],
                                     line_style="dashed", labels=[f"{name} target"], display_legend=True))
    return widgets.VBox([_figure(f"{run.label}: host memory", [host_lines], x_scale, y_scale),
                         _figure(f"{run.label}: balloon actual (solid) and target (dashed)", vm_marks,
                                 vx_scale, vy_scale)])


def plot_compare(runs: list[PolicyRun], labels: list[str]) -> bqplot.Figure:
    """Each run's host memory used over time, one line per run."""
    x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale(min=0.0)
    marks = []
    palette = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728"]
    for i, (run, label) in enumerate(zip(runs, labels)):
        host = run.to_dataframe().drop_duplicates("time")
        x, y = _thin(host["time"].to_numpy(float) / HOUR, host["host_used"].to_numpy(float) / GiB)
        marks.append(bqplot.Lines(x=x, y=y, scales={"x": x_scale, "y": y_scale}, labels=[label],
                                  colors=[palette[i % len(palette)]], display_legend=True))
    return _figure("host memory used", marks, x_scale, y_scale)


def format_score(key: str, value: float) -> str:
    if key in _BYTE_KEYS:
        return format_size(int(value))
    if key in ("overcommit_seconds", "seconds"):
        return f"{value:g} s"
    return f"{int(value)}"


def score_table_html(runs: list[PolicyRun]) -> str:
    """The runs' scores as an HTML table, one column per run."""
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    body = "".join(
        f"<tr><th>{k}</th>" + "".join(f"<td>{format_score(k, r.score[k])}</td>" for r in runs) + "</tr>"
        for k in SCORE_KEYS)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"
