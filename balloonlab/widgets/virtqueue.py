"""The stats virtqueue of an emulated device: where the single stats buffer is, and the last report decoded.

The stats queue runs "in reverse": the guest parks one buffer with the device; to ask for fresh stats the device
hands it back (a *request*); the guest fills it with 10-byte entries ``{le16 tag; le64 value}`` and returns it
(a *report*).  The emulator records each exchange (``x-balloonlab-trace``); this view shows who holds the buffer
now and the last report's bytes split entry by entry, each decoded here from the bytes themselves and named as
the device named it (tags the device's QEMU version does not know are marked ignored, as QEMU ignores them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from traitlets import Int, Unicode, observe

from ..stats import BY_KEY, BY_TAG
from ..units import format_size
from ._html import esc, set_if_changed

ENTRY_SIZE = 10  # le16 tag + le64 value

_HOLDER_TEXT = {
    "device": "with the <b>device</b>: the guest returned it filled (a report); the device keeps it until its "
              "next poll hands it back",
    "guest": "with the <b>guest</b>: the device handed it back to ask for fresh stats and waits for the guest to "
             "return it filled",
    "none": "nowhere yet: the guest's driver has not placed a stats buffer (no driver loaded, or not booted)",
}


@dataclass(frozen=True)
class Entry:
    """One 10-byte entry of a report, decoded from its bytes."""

    index: int
    hex: str  #: the entry's 20 hex digits as on the queue
    tag: int
    value: int
    name: str | None  #: the stat the device took it for (None: unknown tag)
    ignored: bool  #: True when the device ignored it (unknown tag, or a trailing partial entry)


def decode_report(hex_bytes: str, device_entries: list[dict] | None = None) -> tuple[list[Entry], str]:
    """Split a report's bytes into entries; returns (entries, hex of a trailing partial entry or "").

    Names and the ignored flag come from the device's own decoding (``device_entries``) when it lines up with
    the bytes, else from balloonlab.stats.
    """
    raw = bytes.fromhex(hex_bytes)
    whole = len(raw) // ENTRY_SIZE
    device_entries = device_entries or []
    entries = []
    for i in range(whole):
        chunk = raw[i * ENTRY_SIZE:(i + 1) * ENTRY_SIZE]
        tag = int.from_bytes(chunk[:2], "little")
        value = int.from_bytes(chunk[2:], "little")
        known = device_entries[i] if i < len(device_entries) else None
        if known is not None and known.get("tag") == tag and known.get("value") == value:
            name, ignored = known.get("name"), bool(known.get("ignored"))
        else:
            info = BY_TAG.get(tag)
            name, ignored = (info.key if info else None), info is None
        entries.append(Entry(i, chunk.hex(), tag, value, name, ignored))
    return entries, raw[whole * ENTRY_SIZE:].hex()


class VirtqueueView(widgets.HTML):
    """Where the stats buffer is now, and the last report's bytes decoded entry by entry."""

    holder = Unicode("none", help="Who holds the stats buffer: 'guest', 'device' or 'none'.")
    exchanges = Int(0, help="Requests and reports seen on the stats queue so far (the trace's next seq).")

    def __init__(self, **kwargs: Any) -> None:
        self.last_report: dict | None = None  #: the newest exchange of kind "report"
        self.last_request: dict | None = None  #: the newest exchange of kind "request"
        self.entries: list[Entry] = []  #: the last report, decoded
        self.trailing = ""  #: hex of a trailing partial entry of the last report
        self._rendering = False
        self._report_html = self._report_to_html()
        super().__init__(**kwargs)
        self.add_class("balloonlab-virtqueue")
        self._render()

    @property
    def next_seq(self) -> int:
        """The ``since`` to ask the trace for next."""
        return self.exchanges

    def show(self, trace: dict) -> None:
        """Merge an ``x-balloonlab-trace`` reply (asked with ``since=next_seq``); renders at most once."""
        new_report = False
        for exchange in trace.get("exchanges", []):
            if exchange.get("kind") == "report":
                self.last_report, new_report = exchange, True
            elif exchange.get("kind") == "request":
                self.last_request = exchange
        if new_report and self.last_report is not None:
            self.entries, self.trailing = decode_report(self.last_report.get("bytes", ""),
                                                        self.last_report.get("entries"))
            self._report_html = self._report_to_html()
        before = (self.holder, self.exchanges)
        self._rendering = True  # one render below, not one per trait
        try:
            self.holder = str(trace.get("holder", self.holder))
            self.exchanges = int(trace.get("next", self.exchanges))
        finally:
            self._rendering = False
        if new_report or (self.holder, self.exchanges) != before:
            self._render()

    @observe("holder", "exchanges")
    def _render(self, _change: Any = None) -> None:
        if self._rendering:
            return
        holder = (f"<div class='balloonlab-virtqueue-holder' data-holder='{esc(self.holder)}'>"
                  f"stats buffer: {_HOLDER_TEXT.get(self.holder, esc(self.holder))}"
                  f" <span class='muted'>({self.exchanges} exchanges)</span></div>")
        set_if_changed(self, "value", holder + self._report_html)

    def _report_to_html(self) -> str:
        """The last report as a table: built once per report, reused by every render until the next."""
        report = self.last_report
        if report is None:
            return "<div class='muted'>no report on the stats queue yet</div>"
        size = len(report.get("bytes", "")) // 2
        rows = [f"<div>last report: #{report.get('seq')}, {size} bytes, {len(self.entries)} entries"
                " of {le16 tag; le64 value}</div><table class='balloonlab-virtqueue-entries'>"
                "<tr><th>#</th><th class='name'>bytes</th><th>tag</th><th class='name'>name</th>"
                "<th>value</th><th>human</th><th class='name'></th></tr>"]
        for e in self.entries:
            info = BY_KEY.get(e.name) if e.name else None
            human = format_size(e.value) if info is not None and info.unit == "bytes" else f"{e.value:,}"
            rows.append(
                f"<tr class='{'ignored' if e.ignored else 'entry'}' data-tag='{e.tag}'><td>{e.index}</td>"
                f"<td class='name mono'>{e.hex[:4]} {e.hex[4:]}</td><td>{e.tag}</td>"
                f"<td class='name'>{esc(e.name or 'unknown')}</td><td class='mono'>{e.value}</td>"
                f"<td>{human}</td><td class='name'>{'ignored' if e.ignored else ''}</td></tr>"
            )
        if self.trailing:
            rows.append(f"<tr class='ignored'><td></td><td class='name mono'>{self.trailing}</td>"
                        f"<td colspan='4' class='name'>partial entry ({len(self.trailing) // 2} bytes)</td>"
                        "<td class='name'>ignored</td></tr>")
        return "".join(rows) + "</table>"
