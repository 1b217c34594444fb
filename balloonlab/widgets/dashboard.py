"""What ``balloonlab dashboard`` shows: the fleet panel of some libvirt hosts, or of an emulated host.

The page is :class:`~balloonlab.widgets.fleet.FleetPanel`, which takes a libvirt fleet (``balloonlab.fleet``) as
it takes an emulated host (``balloonlab.emulate_host``): both are a host of VMs (``client/backend.py``'s HostLike).

The dashboard reads; it changes nothing on operators' VMs (their polling periods stay as they are; the doctor in
each row says when a VM's stats are off), and by default nobody can change anything through it either: anyone with
the token sees the page, so its target sliders are disabled and a target sent anyway is refused
(``FleetPanel(allow_changes=False)``).  ``balloonlab dashboard --allow-changes`` enables them.

An emulated host runs on the real clock, with polling at 2 s, so there is something to see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .fleet import FleetPanel

if TYPE_CHECKING:
    from ..client.backend import HostLike

#: VMs of the emulated host the dashboard starts when it is given no URI.
EMULATED_VMS = 3


def open_source(uris: Sequence[str]) -> "HostLike":
    """The fleet of these libvirt hosts; with no URI, an emulated host on the real clock."""
    if uris:
        from ..client.fleet import fleet

        return fleet(list(uris))
    from ..client.host import emulate_host

    host = emulate_host(vms=EMULATED_VMS, memory="3G", vm_memory="1G", clock="real", workloads="mixed")
    for lab in host.vms:
        lab.polling_interval = 2
    return host


def dashboard_view(source: "HostLike", allow_changes: bool = False) -> FleetPanel:
    """The widget the dashboard page shows for ``source``: read-only unless ``allow_changes``."""
    panel = FleetPanel(source, allow_changes=allow_changes)
    panel.add_class("balloonlab-dashboard")
    return panel


__all__ = ["EMULATED_VMS", "dashboard_view", "open_source"]
