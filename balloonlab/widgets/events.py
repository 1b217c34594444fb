"""The event log: QMP events (BALLOON_CHANGE, STOP, RESUME, RESET, SHUTDOWN, ...) and what the panel saw change.

Bounded: only the last ``max_events`` entries are kept, so a panel left open for days costs the same as one
opened a minute ago.  Each entry is formatted once when it arrives; a render only joins the kept rows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import deque
from typing import Any

import ipywidgets as widgets
from traitlets import Int, observe, validate

from ..units import format_size
from ._html import esc, set_if_changed


def event_time(event: dict) -> float | None:
    """Seconds since the epoch of a wire event's ``timestamp``, or None when it has none."""
    ts = event.get("timestamp")
    if not isinstance(ts, dict) or "seconds" not in ts:
        return None
    return ts["seconds"] + ts.get("microseconds", 0) / 1e6


def _summary(name: str, data: Any) -> str:
    if name == "BALLOON_CHANGE" and isinstance(data, dict) and isinstance(data.get("actual"), int):
        return f"actual {format_size(data['actual'])} ({data['actual']} B)"
    if not data:
        return ""
    return json.dumps(data, separators=(", ", ": "), sort_keys=True)


class EventLog(widgets.HTML):
    """The newest ``max_events`` events, newest first."""

    max_events = Int(100, help="How many entries the log keeps (older ones are dropped).")

    def __init__(self, **kwargs: Any) -> None:
        self._rows: deque[str] = deque(maxlen=self.max_events)  # before the traits: max_events=... resizes it
        self._dirty = True  # rows changed since the last render (a batch without events renders nothing)
        super().__init__(**kwargs)
        self.add_class("balloonlab-events")
        self.render()

    @validate("max_events")
    def _valid_max(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise ValueError("max_events must be at least 1")
        return proposal["value"]

    @observe("max_events")
    def _resize(self, change: dict) -> None:
        self._rows = deque(self._rows, maxlen=change["new"])
        self._dirty = True
        self.render()

    def __len__(self) -> int:
        return len(self._rows)

    def add_event(self, event: dict) -> None:
        """A QMP event as on the wire (``{"timestamp": ..., "event": NAME, "data": ...}``)."""
        name = str(event.get("event", "?"))
        self._add(event_time(event), name, _summary(name, event.get("data")), "qmp")

    def add_note(self, text: str, when: float | None = None, kind: str = "note") -> None:
        """Something the panel observed that is not a QMP event (a polling change, a disconnect)."""
        self._add(when, kind, text, "note")

    def _add(self, when: float | None, name: str, text: str, css: str) -> None:
        stamp = (dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
                 if when is not None else "")
        self._rows.appendleft(
            f"<tr class='{css}' data-event='{esc(name)}'><td class='mono'>{stamp}</td>"
            f"<td class='name'><b>{esc(name)}</b></td><td class='name'>{esc(text)}</td></tr>"
        )
        self._dirty = True

    def render(self) -> bool:
        """Send the rows if they changed since the last render; False when nothing had changed (then the up to
        ``max_events`` rows are not even joined)."""
        if not self._dirty:
            return False
        self._dirty = False
        if not self._rows:
            html = "<div class='muted'>events: none yet</div>"
        else:
            html = ("<div class='balloonlab-events-list'><table><tr><th class='name'>time (UTC)</th>"
                    "<th class='name'>event</th><th class='name'>data</th></tr>" + "".join(self._rows)
                    + "</table></div>")
        set_if_changed(self, "value", html)
        return True
