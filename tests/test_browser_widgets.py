"""The browser test harness proves itself on a plain ipywidgets IntSlider, independent of balloonlab's own widgets.

If this fails, the problem is the environment (JupyterLab, the widget extension, Chromium), not the panel: a slider
must render without "Error displaying widget", a click on its track must move it, and the kernel must see the move
(an observer copies the value into a Label, which the page then shows).
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

SLIDER_NOTEBOOK = [
    "import ipywidgets as w\n"
    "slider = w.IntSlider(value=10, min=0, max=100, description='probe')\n"
    "seen = w.Label(value='kernel saw: nothing')\n"
    "seen.add_class('probe-seen')\n"
    "slider.observe(lambda change: setattr(seen, 'value', f\"kernel saw: {change['new']}\"), 'value')\n"
    "w.VBox([slider, seen])",
]


def test_int_slider_round_trip(lab_page) -> None:
    lab_page.server.write_notebook("harness/slider.ipynb", SLIDER_NOTEBOOK)
    lab_page.open_notebook("harness/slider.ipynb")
    lab_page.run_all_cells()

    page = lab_page.page
    page.wait_for_selector(".widget-slider .widget-readout")
    assert lab_page.widget_errors() == 0
    assert lab_page.error_outputs() == []
    assert lab_page.text(".widget-slider .widget-readout") == "10"
    assert "kernel saw: nothing" in lab_page.text(".probe-seen")

    lab_page.click_track(".widget-slider .slider-container", 0.9)

    moved = lab_page.wait_for(
        lambda: int(lab_page.text(".widget-slider .widget-readout")) > 50 or None,
        timeout=10,
        what="the slider readout to follow the click",
    )
    assert moved
    readout = lab_page.text(".widget-slider .widget-readout")
    seen = lab_page.wait_for(
        lambda: re.fullmatch(r"kernel saw: (\d+)", lab_page.text(".probe-seen").strip()),
        timeout=10,
        what="the kernel-side observer to report the new value",
    )
    assert seen.group(1) == readout
    lab_page.screenshot("browser-int-slider")
