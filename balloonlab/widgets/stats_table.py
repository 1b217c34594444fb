"""The live guest statistics: a table of every stat, the last-update line with its age, and the doctor's verdict.

Three small HTML views that the panel feeds: :class:`StatsTable` (value as on the wire, unit, human form, change
since the previous report; unset stats shown as unset with their wire value), :class:`LastUpdateView` (when the
guest last reported, and how long ago: re-rendered by the panel's tick) and :class:`DoctorView`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import ipywidgets as widgets
from traitlets import Any as AnyTrait
from traitlets import Bool, Unicode, observe

from ..stats import BY_KEY, STATS, UNSET, format_stat
from ..units import format_duration
from ._html import SEVERITY_COLOUR, esc, set_if_changed

_ORDER = {s.key: i for i, s in enumerate(STATS)}  # tag order reads better than QEMU's hash order


def _change(key: str, value: int | None, before: int | None) -> str:
    if value is None or before is None:
        return ""
    delta = value - before
    if delta == 0:
        return "<span class='muted'>=</span>"
    sign, css = ("+", "up") if delta > 0 else ("\u2212", "down")
    return f"<span class='{css}'>{sign}{format_stat(key, abs(delta))}</span>"


def _wire_value(stats: Any, key: str) -> Any:
    raw = getattr(stats, "raw", None)
    if isinstance(raw, Mapping):
        inner = raw.get("stats")
        if isinstance(inner, Mapping) and "stat-" + key in inner:
            return inner["stat-" + key]
    return UNSET


def _row_order(key: str) -> tuple[int, str]:
    return _ORDER.get(key, len(_ORDER)), key


class _Cells(NamedTuple):
    head: str
    unset_head: str
    unit: str
    meaning: str


@functools.lru_cache(maxsize=64)
def _cells(key: str) -> _Cells:
    """The parts of a row that never change, escaped once (a report re-renders 16 rows)."""
    info = BY_KEY.get(key)
    name = esc(key)
    return _Cells(
        head=f"<tr data-stat='{name}'><td class='name'>{name}</td>",
        unset_head=f"<tr class='unset' data-stat='{name}'><td class='name'>{name}</td>",
        unit=f"<td class='name'>{info.unit if info else '?'}</td>",
        meaning=f"<td class='meaning muted'>{esc(info.meaning) if info else ''}</td>",
    )


class StatsTable(widgets.HTML):
    """Every statistic of the latest report; :meth:`push` each report, then :meth:`render` once per batch."""

    show_meaning = Bool(True, help="Show what each stat means (from balloonlab.stats) as a column.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("balloonlab-stats")
        self.current: Mapping[str, int | None] | None = None  #: the latest report
        self.previous: Mapping[str, int | None] | None = None  #: the report before it (for "change")
        self._current_key: Any = None
        self.render()

    @staticmethod
    def _identity(stats: Mapping[str, int | None]) -> Any:
        return getattr(stats, "last_update", None), tuple(sorted(stats.items()))

    def push(self, stats: Mapping[str, int | None]) -> bool:
        """Record ``stats``; True when it is a new report (another last-update or other values)."""
        key = self._identity(stats)
        if key == self._current_key:
            return False
        if self.current is not None and getattr(self.current, "last_update", None) is not None:
            self.previous = self.current
        self.current, self._current_key = stats, key
        return True

    @observe("show_meaning")
    def render(self, _change: Any = None) -> None:
        set_if_changed(self, "value", self.to_html())

    def to_html(self) -> str:
        stats = self.current
        if stats is None:
            return "<div class='muted'>no statistics read yet</div>"
        head = ("<tr><th class='name'>stat</th><th>value (wire)</th><th class='name'>unit</th><th>human</th>"
                "<th>change</th>" + ("<th class='meaning'>meaning</th>" if self.show_meaning else "") + "</tr>")
        rows = [head]
        before = self.previous or {}
        for key in sorted(stats, key=_row_order):
            value = stats[key]
            cells = _cells(key)
            meaning = cells.meaning if self.show_meaning else ""
            if value is None:
                rows.append(f"{cells.unset_head}<td class='mono'>{esc(str(_wire_value(stats, key)))}</td>"
                            f"{cells.unit}<td>unset</td><td></td>{meaning}</tr>")
            else:
                rows.append(f"{cells.head}<td class='mono'>{value}</td>{cells.unit}<td>{format_stat(key, value)}</td>"
                            f"<td>{_change(key, value, before.get(key))}</td>{meaning}</tr>")
        return "<table class='balloonlab-stats-table'>" + "".join(rows) + "</table>"


def describe_age(last_update: dt.datetime | None, now: dt.datetime | None = None,
                 virtual_clock: bool = False) -> tuple[str, str]:
    """("2026-11-26 04:31:02 UTC", "3 s ago") -- or why there is no time at all, and no age."""
    if last_update is None:
        return "never (last-update 0): the guest has not reported", ""
    stamp = last_update.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if virtual_clock:
        # The device's host clock moves only with lab.advance(): an age against this machine's clock means nothing.
        return stamp, "virtual clock"
    now = now or dt.datetime.now(dt.timezone.utc)
    # Whole seconds, as last-update itself: the text (and so the widget) changes at most once a second.
    age = float(int((now - last_update).total_seconds()))
    if age < -2:
        return stamp, f"{format_duration(-age)} ahead of this machine's clock"
    return stamp, f"{format_duration(max(0.0, age))} ago"


class LastUpdateView(widgets.HTML):
    """When the guest last reported and how long ago; :meth:`tick` refreshes the age."""

    last_update = AnyTrait(None, allow_none=True, help="Aware datetime of the guest's last report, None if never.")
    virtual_clock = Bool(False, help="The lab runs on a virtual clock: show the time without an age.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("balloonlab-last-update")
        self.tick()

    @observe("last_update", "virtual_clock")
    def tick(self, _change: Any = None) -> None:
        """Render (again): the age changes with time even when the report does not."""
        stamp, age = describe_age(self.last_update, virtual_clock=self.virtual_clock)
        # Separate spans: a page (or a test) can tell a new report (the stamp) from time passing (the age).
        html = f"last update: <span class='balloonlab-last-update-stamp'>{esc(stamp)}</span>"
        if age:
            html += f" <span class='balloonlab-last-update-age'>({esc(age)})</span>"
        set_if_changed(self, "value", html)


class DoctorView(widgets.HTML):
    """The doctor's verdict (``lab.doctor()``) in words, coloured by severity."""

    verdict = Unicode("", help="Short code of the diagnosis, e.g. 'polling-off'.")
    message = Unicode("", help="The diagnosis in words.")
    severity = Unicode("info", help="'ok', 'warning' or 'error' ('info' before the first diagnosis).")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("balloonlab-doctor")
        self._render()

    def show(self, diagnosis: Any) -> None:
        """Take ``.verdict``, ``.message`` and ``.severity`` from a Diagnosis."""
        with self.hold_trait_notifications():
            self.verdict = str(getattr(diagnosis, "verdict", ""))
            self.message = str(getattr(diagnosis, "message", diagnosis))
            self.severity = str(getattr(diagnosis, "severity", "info"))

    @observe("verdict", "message", "severity")
    def _render(self, _change: Any = None) -> None:
        if not (self.verdict or self.message):
            text = "<span class='muted'>doctor: no diagnosis yet</span>"
        else:
            colour = SEVERITY_COLOUR.get(self.severity, SEVERITY_COLOUR["info"])
            text = (f"doctor: <b style='color:{colour}' data-severity='{esc(self.severity)}'>{esc(self.verdict)}</b>"
                    f" &mdash; {esc(self.message)}")
        set_if_changed(self, "value", text)
