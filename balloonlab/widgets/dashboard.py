"""What ``balloonlab dashboard`` shows: the fleet of some libvirt hosts, or an emulated host, as one widget.

The page is the fleet panel (``balloonlab.FleetPanel``, the emulated host's view) when this installation has it.
Until then, and wherever it is missing, it is one :class:`~balloonlab.widgets.panel.BalloonPanel` per VM in tabs
under a header that names the hosts: the same live stats, sliders and plot, per VM.

The dashboard reads; it changes nothing by itself on operators' VMs (their polling periods stay as they are;
``doctor`` says when a VM's stats are off).  An emulated source gets polling at 2 s so there is something to see.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as widgets

from .panel import BalloonPanel

#: Emulated VMs the dashboard starts when it is given no URI (and the emulated host is not available).
EMULATED_VMS = 3


def open_source(uris: Sequence[str]) -> Any:
    """The fleet of these libvirt hosts; with no URI, an emulated host (or a few emulated labs)."""
    import balloonlab

    if uris:
        return balloonlab.fleet(list(uris))
    emulate_host = getattr(balloonlab, "emulate_host", None)
    if emulate_host is not None:
        return emulate_host(vms=EMULATED_VMS)
    return [balloonlab.emulate(guest="linux", seed=i) for i in range(EMULATED_VMS)]


def _labs(source: Any) -> list[Any]:
    return list(source.vms) if hasattr(source, "vms") else list(source)


def dashboard_view(source: Any) -> widgets.Widget:
    """The widget the dashboard page shows for ``source`` (a fleet, an emulated host or a list of labs)."""
    import balloonlab

    fleet_panel = getattr(balloonlab, "FleetPanel", None)
    if fleet_panel is not None and hasattr(source, "vms"):
        return fleet_panel(source)
    labs = _labs(source)
    for lab in labs:
        if lab.backend == "emulated" and lab.polling_interval == 0:
            lab.polling_interval = 2
    names = [lab.name or f"vm{i}" for i, lab in enumerate(labs)]
    hosts = ", ".join(html.escape(h.uri) for h in getattr(source, "hosts", [])) or "an emulated host"
    header = widgets.HTML(
        f"<h3 class='balloonlab-dashboard-title'>balloonlab &middot; {len(labs)} VM{'s' if len(labs) != 1 else ''}"
        f" on {hosts}</h3>")
    if not labs:
        return widgets.VBox([header, widgets.HTML("<p>No running VM with a balloon device.</p>")])
    tabs = widgets.Tab(children=[BalloonPanel(lab) for lab in labs])
    for i, name in enumerate(names):
        tabs.set_title(i, name)
    view = widgets.VBox([header, tabs])
    view.add_class("balloonlab-dashboard")
    return view


__all__ = ["EMULATED_VMS", "dashboard_view", "open_source"]
