"""BalloonPanel in a real JupyterLab, driven by a real browser: the experience a person gets.

The notebook is the three lines a reader types (emulated linux guest, ``BalloonPanel(lab)``). The test runs it
through JupyterLab's own "run all cells" command, checks the panel renders with its sliders and no
"Error displaying widget", turns guest-stats polling on by clicking the interval slider's track (the way a person
does it; arrow keys on the handle do not move an ipywidgets slider), and then waits for what that must cause:
the device accepts the interval (the label beside the slider confirms the value read back from QEMU), and new
stats reports arrive -- the last-update line and the stats table change in the page. Screenshots go to the
artifacts directory (tests/helpers.py: artifacts_dir; on failure too, through the ``lab_page`` fixture).
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

PANEL_NOTEBOOK = [
    'import balloonlab\nlab = balloonlab.emulate(guest="linux")\npanel = balloonlab.BalloonPanel(lab)\npanel',
]
INTERVAL = ".balloonlab-panel .balloonlab-interval"
#: Where on the interval slider's track (0..60 s) the test clicks: a few seconds, so reports come quickly.
CLICK_AT = 0.1


def report_shown(lab) -> tuple[str | None, dict[str, str]]:
    """(the last-update time the page shows, or None; {stat: wire value} from the stats table).

    Read from ``.balloonlab-last-update-stamp`` alone: the whole ``.balloonlab-last-update`` line also carries the
    report's age ("3 s ago"), which changes every second without any new report.
    """
    found = re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lab.text(".balloonlab-last-update-stamp").strip())
    values = lab.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.balloonlab-stats tr[data-stat]')]
                 .map(tr => [tr.dataset.stat, tr.querySelector('td.mono').textContent.trim()]))"""
    )
    return (found.group(0) if found else None), values


@pytest.fixture
def panel_page(lab_page):
    """The panel notebook open and run, with the panel rendered."""
    lab_page.server.write_notebook("panel/panel.ipynb", PANEL_NOTEBOOK)
    lab_page.open_notebook("panel/panel.ipynb")
    lab_page.run_all_cells()
    lab_page.page.wait_for_selector(".balloonlab-panel .widget-slider")
    return lab_page


def test_panel_renders_and_follows_the_interval_slider(panel_page) -> None:
    lab = panel_page
    assert lab.error_outputs() == []
    assert lab.widget_errors() == 0
    assert lab.page.locator(".balloonlab-panel .widget-slider").count() >= 2, "interval and target sliders"
    for part in (".balloonlab-stats", ".balloonlab-last-update-stamp", ".balloonlab-interval-label"):
        assert lab.page.locator(f".balloonlab-panel {part}").count() == 1, f"{part} is missing from the panel"

    # QEMU starts with polling off; the panel reads that from the device before the test touches anything.
    lab.wait_for(
        lambda: "polling off" in lab.text(".balloonlab-interval-label"),
        timeout=30,
        what="the panel to show the device's initial interval (polling off)",
    )
    assert lab.text(f"{INTERVAL} .widget-readout") == "0"
    before = report_shown(lab)
    lab.click_track(f"{INTERVAL} .slider-container", CLICK_AT)
    seconds = lab.wait_for(
        lambda: int(lab.text(f"{INTERVAL} .widget-readout")) or None,
        timeout=10,
        what="the interval slider to move off 0 after the click",
    )
    # The label shows what QEMU answered to qom-get after the qom-set: the kernel applied the browser's value.
    lab.wait_for(
        lambda: re.search(rf"every {seconds} s\b", lab.text(".balloonlab-interval-label")),
        timeout=15,
        what=f"the device to confirm a {seconds} s polling interval",
    )
    # Polling on: a first report replaces what was shown, and a second one (at most `seconds` later) changes the
    # values again -- the page keeps following the guest. Deadlines leave room for a loaded machine.
    deadline = 3 * seconds + 20
    first = lab.wait_for(
        lambda: (shown := report_shown(lab))[0] not in (None, before[0]) and shown[1] != before[1] and shown,
        timeout=deadline,
        what="a new last-update time and new values after polling was turned on",
    )
    lab.wait_for(
        lambda: (shown := report_shown(lab))[0] != first[0] and shown[1] != first[1],
        timeout=deadline,
        what=f"the next report to change last-update and the values again (first report: {first})",
    )
    assert lab.widget_errors() == 0
    assert lab.error_outputs() == []
    lab.page.set_viewport_size({"width": 1280, "height": 1600})
    lab.screenshot("browser-panel")
    lab.screenshot("browser-panel-widget", selector=".balloonlab-panel")
