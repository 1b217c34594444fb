"""FleetPanel in a real JupyterLab, driven by a real browser: a host of 4 VMs, one VM's target slider moved.

The notebook is what a reader types: a host of 4 emulated VMs on the real clock, polling every second, and
``FleetPanel(host)``.  The test runs it with JupyterLab's "run all cells", checks the host bar and one row per VM
render without "Error displaying widget", clicks vm2's target slider track (the way a person moves it), and waits
for what that must cause: vm2's driver moves ``actual`` to the slider's value (the row shows what QEMU reports),
and no other VM changes.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

FLEET_NOTEBOOK = [
    "import balloonlab\n"
    'host = balloonlab.emulate_host(memory="3G", vms=4, vm_memory="1G", clock="real", workloads="steady")\n'
    "for lab in host.vms:\n"
    "    lab.polling_interval = 1\n"
    "panel = balloonlab.FleetPanel(host)\n"
    "panel",
]
ROW = ".balloonlab-fleet .balloonlab-fleet-row"


def actual_shown(lab, index: int) -> str:
    """The ``actual`` a row shows, e.g. "1.0 GiB" or "576.0 MiB"."""
    text = lab.page.locator(f"{ROW} .balloonlab-fleet-numbers").nth(index).text_content() or ""
    found = re.search(r"actual (\S+ \S+)", text)
    return found.group(1) if found else ""


def test_fleet_panel_shows_four_vms_and_moves_one_vms_target(lab_page) -> None:
    lab = lab_page
    lab.server.write_notebook("fleet/fleet.ipynb", FLEET_NOTEBOOK)
    lab.open_notebook("fleet/fleet.ipynb")
    lab.run_all_cells()
    lab.page.wait_for_selector(f"{ROW} .widget-slider")
    assert lab.error_outputs() == []
    assert lab.widget_errors() == 0
    assert lab.page.locator(ROW).count() == 4
    assert lab.page.locator(".balloonlab-fleet .balloonlab-host-summary").count() == 1
    lab.wait_for(lambda: "VMs hold" in lab.text(".balloonlab-fleet .balloonlab-host-summary"), timeout=30,
                 what="the host bar's summary of where the host's memory went")
    lab.wait_for(lambda: all(actual_shown(lab, i) == "1.0 GiB" for i in range(4)), timeout=30,
                 what="every VM at its full 1 GiB")

    vm2_slider = f"{ROW} >> nth=2 >> .balloonlab-target"
    lab.click_track(f"{vm2_slider} .slider-container", 0.5)
    mib = lab.wait_for(lambda: (v := int(lab.text(f"{vm2_slider} .widget-readout"))) != 1024 and v,
                       timeout=10, what="vm2's target slider to move after the click")
    lab.wait_for(lambda: actual_shown(lab, 2) == f"{mib:.1f} MiB", timeout=30,
                 what=f"vm2's actual to reach the {mib} MiB the slider asked for")
    assert [actual_shown(lab, i) for i in (0, 1, 3)] == ["1.0 GiB"] * 3
    assert lab.widget_errors() == 0
    lab.page.set_viewport_size({"width": 1280, "height": 1200})
    lab.screenshot("browser-fleet", selector=".balloonlab-fleet")
