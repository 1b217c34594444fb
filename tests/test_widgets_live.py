"""BalloonPanel on a real qemu-system-x86_64 (TCG) with balloonlab's tiny Linux guest: the same panel, real device.

The panel's sliders must drive the real device and the real guest driver (polling, ballooning), and the panel
must show what they answer.  Real QEMU's QMP socket takes one client at a time, so the device is read back
through the lab itself here; the independent second connection is exercised against the emulator
(test_widgets_panel.py).
"""

from __future__ import annotations

import re

import pytest

import balloonlab
from balloonlab.widgets import BalloonPanel
from tests.helpers import wait_for

from .test_widgets_panel import MiB, front_end_sets

pytestmark = pytest.mark.qemu


def test_panel_drives_a_live_qemu(start_vm) -> None:
    vm = start_vm(memory="512M")
    lab = balloonlab.connect(vm.qmp_socket)
    panel = None
    try:
        panel = BalloonPanel(lab)
        assert panel.virtqueue is None  # no trace on a real QEMU
        assert panel.target_slider.max == 512
        # The Linux driver reports once when it loads, before polling is on.
        wait_for(lambda: "<tr data-stat='free-memory'>" in panel.stats_table.value, "the boot report", 30)
        stamp = re.search(r"stamp'>([^<]*)<", panel.last_update.value).group(1)

        front_end_sets(panel.interval_slider, value=1)
        wait_for(lambda: lab.polling_interval == 1, "QEMU to poll every second")
        wait_for(lambda: stamp not in panel.last_update.value, "a new report in the panel", 30)
        wait_for(lambda: panel.doctor.verdict == "healthy", "the doctor to find the guest healthy", 30)

        front_end_sets(panel.target_slider, value=256)
        wait_for(lambda: panel.target_control.actual == 256 * MiB, "the real guest to balloon to 256 MiB", 60)
        assert "256.0 MiB" in panel.target_control.actual_label.value
        wait_for(lambda: "BALLOON_CHANGE" in panel.events.value, "BALLOON_CHANGE in the event log")
        panel.wait_idle()
        assert panel.plot.point_count >= 2
        assert panel.status_severity == "ok"
    finally:
        if panel is not None:
            panel.close()
        lab.close()
