"""The two sliders of the panel: the stats polling interval and the balloon target (with ``actual`` beside it).

A slider here is bound to a device value: the user's moves become requests (applied on release), and the
device's value moves the slider without turning into a request.  :class:`DeviceBinding` holds that rule once for
both sliders.  The controls do not talk to the lab: they call ``request(value)`` and the panel answers with
:meth:`DeviceBinding.applied` or :meth:`DeviceBinding.refused`, which snaps the slider back.
"""

from __future__ import annotations

import threading
from typing import Callable

import ipywidgets as widgets
from traitlets import Bool, HasTraits, Int, observe, validate

from ..units import format_size
from ._html import esc, set_if_changed

MiB = 1 << 20


class DeviceBinding(HasTraits):
    """Binds an ``IntSlider`` to a value that lives in the device.

    A value the device reports (:meth:`show`) moves the slider, widening its range if needed rather than letting
    the slider clamp it (a clamp would look like a user move and change the device).  While a request is in flight
    (``pending``) device reports only update ``device``: the slider stays where the user left it until the request
    is applied or refused.
    """

    device = Int(None, allow_none=True, help="The value the device reports (None until known).")
    pending = Bool(False, help="True while a value chosen on the slider is being applied to the device.")

    def __init__(self, slider: widgets.IntSlider, request: Callable[[int], None]) -> None:
        super().__init__()
        self.slider = slider
        self._request = request
        self._lock = threading.RLock()  # the panel thread moves the slider while a comm handler may too
        self._moving = False
        self._latest: int | None = None  # the newest value requested from the slider
        slider.observe(self._moved, "value")

    def show(self, value: int) -> None:
        """The device reports ``value``."""
        with self._lock:
            self.device = value
            if not self.pending:
                self._move(value)

    def applied(self, value: int) -> None:
        """The device accepted ``value`` (requested from the slider)."""
        with self._lock:
            self.device = value
            if value == self._latest:  # else a newer request is still on its way: leave the slider alone
                self.pending = False
                self._move(value)

    def refused(self, value: int) -> None:
        """The device refused ``value``: back to what the device has (unless a newer request is on its way)."""
        with self._lock:
            if value == self._latest:
                self.pending = False
                if self.device is not None:
                    self._move(self.device)

    def _move(self, value: int) -> None:
        s = self.slider
        self._moving = True
        try:
            with s.hold_sync():
                if value > s.max:
                    s.max = value
                if value < s.min:
                    s.min = value
                set_if_changed(s, "value", value)
        finally:
            self._moving = False

    def _moved(self, change: dict) -> None:
        with self._lock:
            if self._moving or (change["new"] == self.device and not self.pending):
                return
            self.pending = True
            self._latest = change["new"]
        self._request(change["new"])


class IntervalControl(widgets.HBox):
    """``guest-stats-polling-interval`` as a slider: 0 (off) to ``max_interval`` seconds, applied on release."""

    max_interval = Int(60, help="Largest interval offered on the slider, in seconds (the device allows more).")

    def __init__(self, request: Callable[[int], None], **kwargs) -> None:
        self.slider = widgets.IntSlider(
            value=0, min=0, max=60, step=1, continuous_update=False, description="polling (s)",
            tooltip="guest-stats-polling-interval: seconds between stats requests, 0 = off",
            style={"description_width": "initial"},
        )
        self.slider.add_class("balloonlab-interval")
        self.label = widgets.HTML()
        self.label.add_class("balloonlab-interval-label")
        super().__init__(children=[self.slider, self.label], **kwargs)
        self.add_class("balloonlab-interval-control")
        self.binding = DeviceBinding(self.slider, request)
        self.binding.observe(self._render, ["device", "pending"])
        self.slider.max = self.max_interval
        self._render()

    @validate("max_interval")
    def _valid_max(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise ValueError("max_interval must be at least 1 s")
        return proposal["value"]

    @observe("max_interval")
    def _max_changed(self, change: dict) -> None:
        self.slider.max = max(change["new"], self.binding.device or 0)

    def _render(self, _change: dict | None = None) -> None:
        device = self.binding.device
        if device is None:
            text = "unknown"
        elif device == 0:
            text = "polling off"
        else:
            text = f"every {device} s"
        if self.binding.pending:
            text += " <span class='muted'>(applying...)</span>"
        set_if_changed(self.label, "value", text)


class TargetControl(widgets.HBox):
    """The balloon target in MiB, from a floor to the VM's RAM, applied on release; ``actual`` shown beside it."""

    ram_size = Int(0, help="The VM's RAM in bytes (query-memory-size-summary base-memory).")
    actual = Int(None, allow_none=True, help="The balloon's actual size in bytes, as QEMU last reported it.")

    def __init__(self, ram_size: int, request: Callable[[int], None], **kwargs) -> None:
        ram_mib = max(1, ram_size // MiB)
        self.slider = widgets.IntSlider(
            value=ram_mib, min=self.floor_mib(ram_size), max=ram_mib, step=1, continuous_update=False,
            description="target (MiB)", tooltip="balloon target: the memory the guest should keep",
            style={"description_width": "initial"},
        )
        self.slider.add_class("balloonlab-target")
        self.actual_label = widgets.HTML()
        self.actual_label.add_class("balloonlab-actual")
        super().__init__(children=[self.slider, self.actual_label], ram_size=ram_size, **kwargs)
        self.add_class("balloonlab-target-control")
        self.binding = DeviceBinding(self.slider, request)
        self._render()

    @staticmethod
    def floor_mib(ram_size: int) -> int:
        """Lowest target offered: 1/8 of RAM but at least 64 MiB (never above RAM): below that a guest thrashes."""
        ram_mib = max(1, ram_size // MiB)
        return min(ram_mib, max(64, ram_mib // 8))

    @observe("actual")
    def _render(self, _change: dict | None = None) -> None:
        if self.actual is None:
            text = "actual: unknown"
        else:
            text = f"actual: <b>{esc(format_size(self.actual))}</b> <span class='muted'>({self.actual} B)</span>"
        set_if_changed(self.actual_label, "value", text)
