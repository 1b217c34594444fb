"""Why are my balloon stats missing, frozen or odd?  One sample in, one verdict out.

The doctor is a pure function of what QEMU said (a ``guest-stats`` sample, the polling interval, the run state)
and the time now, so it can be tested without a VM and explains live and emulated labs alike.  It encodes what
users trip over (docs/qemu-behaviour.md, C) and QEMU's own state machine: the timer re-arms only when the guest
answers, so a guest that stops answering stops polling for good; a paused VM polls nothing; last-update is the
host's wall clock in whole seconds.

Verdicts, most specific first:

``paused``          the VM is not running (``query-status``): nothing is polled until ``cont``.
``polling-off``     interval 0: the stats are a snapshot (or absent) and will not change.
``never-reported``  polling is on but last-update is 0: no balloon driver in the guest (Linux: virtio_balloon not
                    loaded; Windows: the driver without the Balloon service).
``empty-report``    a fresh last-update with every stat unset: some virtio-win builds do this.
``stale``           last-update older than about 2-3 intervals while polling is on: the guest stopped answering.
``partial``         the guest fills only some of the stats its driver generation should fill.
``healthy``         fresh and complete.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from typing import Any

from ..stats import GuestStats
from ..units import format_duration
from ..qapi import RunState

#: Tags 0-7: what a current driver fills (Linux >= 4.15; virtio-win).  A guest that leaves one of these unset
#: while reporting others has an old or partial driver.
_CORE = ("swap-in", "swap-out", "major-faults", "minor-faults", "free-memory", "total-memory",
         "available-memory", "disk-caches")
#: Filled only by some guests, so unset is normal: hugetlb counters (Linux with CONFIG_HUGETLB_PAGE; never
#: Windows) and the QEMU >= 9.2 stats (Linux >= 6.12 guests).
_OPTIONAL = ("htlb-pgalloc", "htlb-pgfail", "oom-kills", "alloc-stalls", "async-scans", "direct-scans",
             "async-reclaims", "direct-reclaims")

SEVERITIES = ("ok", "warning", "error")


@dataclass(frozen=True)
class Diagnosis:
    """A verdict (short code), what it means and what to do (message), and how bad it is."""

    verdict: str
    message: str
    severity: str  #: "ok" | "warning" | "error"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.severity == "ok"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.verdict}: {self.message}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))

    def _repr_html_(self) -> str:
        colour = {"ok": "#2e7d32", "warning": "#b26a00", "error": "#c62828"}[self.severity]
        return (f"<div class='balloonlab-doctor'><b style='color:{colour}'>{html.escape(self.verdict)}</b> "
                f"<small>({self.severity})</small><br>{html.escape(self.message)}</div>")


def stale_after(interval: int) -> float:
    """Seconds after which a report counts as stale: 2.5 intervals plus slack for whole-second stamps."""
    return 2.5 * interval + 2.0


def _now_seconds(now: dt.datetime | float | None) -> float:
    if now is None:
        return dt.datetime.now(dt.timezone.utc).timestamp()
    if isinstance(now, dt.datetime):
        return now.timestamp()
    return float(now)


def diagnose(stats: GuestStats, interval: int, now: dt.datetime | float | None = None,
             running: bool = True, run_state: RunState | None = None) -> Diagnosis:
    """Judge one sample.

    ``interval`` is ``guest-stats-polling-interval``; ``now`` is the host wall clock (aware datetime or epoch
    seconds; default: now), on the same clock as ``last-update``; ``running``/``run_state`` come from
    ``query-status``.
    """
    now_s = _now_seconds(now)
    reported = stats.last_update is not None
    age = now_s - stats.last_update_seconds if reported else None
    details: dict[str, Any] = {"interval": interval, "age": age, "running": running, "run_state": run_state,
                               "unset": list(stats.unset)}
    when = f"{format_duration(age)} ago" if age is not None and age >= 0 else "just now"

    if not running:
        state = run_state or "paused"
        if reported:
            msg = (f"The VM is not running (status '{state}'): QEMU's polling timer runs on the VM clock, so "
                   f"nothing is polled until it resumes; the stats are from {when}. Resume it with `cont`.")
        else:
            msg = (f"The VM is not running (status '{state}') and the guest has never reported. Resume it with "
                   "`cont` (a VM started with -S waits for that); the driver reports once it loads.")
        return Diagnosis("paused", msg, "warning", details)

    if interval == 0:
        if reported:
            msg = (f"Polling is off (guest-stats-polling-interval 0): these stats are a snapshot from {when} and "
                   "will not change. Turn it on: lab.polling_interval = 2 (or qom-set ... "
                   "guest-stats-polling-interval 2).")
        else:
            msg = ("Polling is off (guest-stats-polling-interval 0) and the guest has never reported. Turn polling "
                   "on (lab.polling_interval = 2); if the stats stay unset after that, the guest has no balloon "
                   "driver.")
        return Diagnosis("polling-off", msg, "warning", details)

    if not reported:
        msg = ("Polling is on but the guest has never answered (last-update 0, every stat unset): the guest has no "
               "working balloon driver. Linux: load it (modprobe virtio_balloon; CONFIG_VIRTIO_BALLOON). Windows: "
               "install the virtio-win Balloon driver AND its Balloon service (the driver alone reports nothing).")
        return Diagnosis("never-reported", msg, "error", details)

    if not stats.filled:
        msg = (f"The guest answered {when} but left every stat unset. Some virtio-win Balloon service builds do "
               "this; update the service (or check that it runs with enough rights).")
        return Diagnosis("empty-report", msg, "warning", details)

    assert age is not None
    if age > stale_after(interval):
        msg = (f"The last report is {format_duration(age)} old although polling is every {interval} s: the guest "
               "stopped answering. QEMU re-arms its timer only when the guest answers, so polling has stopped for "
               "good; changing the interval does not help while the guest keeps the buffer. Reload the guest's "
               "driver (rmmod/modprobe virtio_balloon) or restart the guest.")
        return Diagnosis("stale", msg, "error", details)

    expected = [k for k in _CORE if k in stats]
    missing = [k for k in expected if stats[k] is None]
    if missing:
        fallback = (" Without available-memory, 'used memory' can only be total - free, which counts page cache "
                    "as used." if "available-memory" in missing else "")
        msg = (f"The guest reports {len(expected) - len(missing)} of {len(expected)} basic stats; unset: "
               f"{', '.join(missing)}. An old or partial driver (available-memory needs Linux >= 4.6, "
               f"disk-caches Linux >= 4.15): what is unset cannot be plotted.{fallback}")
        return Diagnosis("partial", msg, "warning", details)

    optional_unset = [k for k in _OPTIONAL if k in stats and stats[k] is None]
    extra = (f" Unset, which is normal for many guests: {', '.join(optional_unset)} (hugetlb counters need "
             "CONFIG_HUGETLB_PAGE and are never sent by Windows; the QEMU >= 9.2 stats need a Linux >= 6.12 "
             "guest).") if optional_unset else ""
    msg = f"The guest answered {when}, polling every {interval} s.{extra}"
    return Diagnosis("healthy", msg, "ok", details)


__all__ = ["Diagnosis", "diagnose", "stale_after", "SEVERITIES"]
