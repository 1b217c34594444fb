"""Small helpers shared by the HTML-based views: escaping, severity colours, the panel's style sheet."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

esc = html.escape

#: Colours follow JupyterLab's theme variables, with fallbacks for Notebook 7 and Voila.
SEVERITY_COLOUR = {
    "ok": "var(--jp-success-color1, #388e3c)",
    "warning": "var(--jp-warn-color1, #f57c00)",
    "error": "var(--jp-error-color1, #d32f2f)",
    "info": "var(--jp-ui-font-color2, #616161)",
}

# One <style> per panel, every selector under .balloonlab-panel so nothing leaks into the rest of the page.
STYLE = """<style>
.balloonlab-panel table { border-collapse: collapse; font-size: var(--jp-ui-font-size1, 13px); }
.balloonlab-panel th, .balloonlab-panel td { padding: 1px 8px; text-align: right; white-space: nowrap; }
.balloonlab-panel th { border-bottom: 1px solid var(--jp-border-color1, #bdbdbd); }
.balloonlab-panel td.name, .balloonlab-panel th.name { text-align: left; }
.balloonlab-panel td.mono { font-family: var(--jp-code-font-family, monospace); }
.balloonlab-panel td.meaning, .balloonlab-panel th.meaning { text-align: left; white-space: normal; min-width: 14em; }
.balloonlab-panel .balloonlab-stats-box { min-width: 0; max-width: 100%; flex: 1 1 40em; }
.balloonlab-panel tr.unset td { color: var(--jp-ui-font-color2, #757575); }
.balloonlab-panel tr.ignored td { color: var(--jp-ui-font-color2, #757575); text-decoration: line-through; }
.balloonlab-panel .balloonlab-events-list { max-height: 16em; overflow-y: auto; }
.balloonlab-panel .up { color: var(--jp-success-color1, #388e3c); }
.balloonlab-panel .down { color: var(--jp-error-color1, #d32f2f); }
.balloonlab-panel .muted { color: var(--jp-ui-font-color2, #757575); }
.balloonlab-panel .balloonlab-interval-label, .balloonlab-panel .balloonlab-actual { margin: 0 0 0 0.5em; }
.balloonlab-panel .balloonlab-interval-label { min-width: 10em; }
.balloonlab-panel .balloonlab-interval-control { margin-right: 2.5em; }
</style>"""


def set_if_changed(widget: Any, name: str, value: Any) -> bool:
    """Assign a synced trait only when it differs: every assignment that changes it is a message to the browser."""
    if getattr(widget, name) != value:
        setattr(widget, name, value)
        return True
    return False


def style_widget() -> widgets.HTML:
    """The panel's style sheet as an (invisible) HTML widget."""
    w = widgets.HTML(STYLE, layout=widgets.Layout(display="none"))
    w.add_class("balloonlab-style")
    return w
