"""A live view of a lab's guest statistics in a plain cell output (``%balloon watch``), without any widget.

Why a display handle and not a widget: ``display(view, display_id=...)`` then ``update_display_data`` messages
refresh one output in place, need no front-end extension, and survive nbconvert (the last state is what the
saved notebook shows).  The updates come from the lab's background thread through ``lab.subscribe``; the
background never prints (a stray ``print`` lands in whatever cell runs now), it only publishes
``update_display_data`` for its own display id, and only through a display publisher that understands updates
(a Jupyter kernel, or IPython's capturing publisher).  Terminal IPython has no such thing: there the watch shows a
snapshot and says so.

The lab's loop thread only queues (:class:`~balloonlab.client.pump.UpdatePump`): it carries every lab's QMP traffic
and the in-process emulators, and ipykernel's ``publish`` flushes stdout/stderr and may wait on its IO thread for
seconds.  The watch's own pump thread publishes.  Bursts (a virtual clock advanced by an hour at a 1 s interval
gives 3600 reports) are batched there: at most one update per :data:`MIN_UPDATE_GAP` seconds, and the last state
is always published.
"""

from __future__ import annotations

import contextvars
import html
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..client.pump import UpdatePump
from ..units import format_duration, format_size

if TYPE_CHECKING:  # pragma: no cover
    from ..client.balloon import Balloon
    from ..stats import GuestStats

__all__ = ["StatsView", "StatsWatch", "MIN_UPDATE_GAP"]

log = logging.getLogger("balloonlab")

#: Seconds between two published updates of one watch (later reports within the gap are coalesced).
MIN_UPDATE_GAP = 0.1

_ids = itertools.count(1)


class StatsView:
    """One immutable snapshot of what a watch shows: the stats plus a status line.  Rendering has no effects."""

    def __init__(
        self,
        stats: "GuestStats | None",
        *,
        interval: int | None,
        actual: int | None,
        reports: int,
        state: str,
        note: str = "",
    ) -> None:
        self.stats = stats
        self.interval = interval
        self.actual = actual
        self.reports = reports  #: times the watch saw new stats since it started (not the guest's report count)
        self.state = state  #: "live", "snapshot", "stopped" or "disconnected"
        self.note = note

    def headline(self) -> str:
        """The status line, e.g. ``watching (live) | polling every 2 s | actual 512.0 MiB | refreshed 3 times``.

        "refreshed N times", not "N reports": the lab reads the stats at most twice a second, so a burst (a
        virtual clock advanced by 10 s at a 1 s interval) is ten reports by the guest but one refresh here.
        """
        if self.interval is None:
            polling = "polling ?"
        elif self.interval == 0:
            polling = "polling off (%balloon poll 2 turns it on)"
        else:
            polling = f"polling every {format_duration(self.interval)}"
        parts = [
            f"watching ({self.state})",
            polling,
            f"actual {format_size(self.actual)}" if self.actual is not None else "actual ?",
            f"refreshed {self.reports} time{'s' if self.reports != 1 else ''} since the watch started",
        ]
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.headline())
        p.break_()
        if self.stats is None:
            p.text("no stats yet")
        else:
            p.pretty(self.stats)

    def __repr__(self) -> str:
        from IPython.lib.pretty import pretty

        return pretty(self)

    def _repr_html_(self) -> str:
        colour = {"live": "#2a7", "snapshot": "#888", "stopped": "#888", "disconnected": "#c33"}.get(self.state, "#888")
        table = self.stats._repr_html_() if self.stats is not None else "<p>no stats yet</p>"
        return (
            f"<div class='balloonlab-watch' data-state='{html.escape(self.state)}' data-reports='{self.reports}'>"
            f"<div style='border-left:3px solid {colour};padding-left:6px'><small>{html.escape(self.headline())}"
            f"</small></div>{table}</div>"
        )


def has_live_display(shell: Any) -> bool:
    """True when the shell's display publisher understands ``update_display_data`` and widgets (a Jupyter
    kernel, a capture).  Terminal IPython's base publisher would print a text form instead (a widget's repr,
    or a watch's text from a background thread): never that."""
    from IPython.core.displaypub import DisplayPublisher

    return type(shell.display_pub).publish is not DisplayPublisher.publish


class StatsWatch:
    """Shows ``lab``'s stats in the current cell's output and keeps that output up to date until :meth:`stop`.

    Create it on the cell's thread (``start()`` subscribes, reads the lab once and displays); after that the lab's
    loop thread only queues updates, the watch's pump thread applies and publishes them, and ``stop()`` may come
    from any thread.  ``cell_id``: the notebook cell that started it (the magics stop an earlier watch of the same
    cell when it runs again), None outside a kernel.
    """

    def __init__(self, lab: "Balloon", shell: Any, cell_id: str | None = None) -> None:
        self.lab = lab
        self.shell = shell
        self.cell_id = cell_id
        self.display_id = f"balloonlab-watch-{next(_ids)}-{int(time.time() * 1000)}"
        self.reports = 0
        self.published = 0  #: updates sent to the front end (after batching)
        self._stats: "GuestStats | None" = None
        self._interval: int | None = None
        self._actual: int | None = None
        self._state = "live"
        self._note = ""
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._pump: UpdatePump | None = None

    # life cycle ---------------------------------------------------------------------------------------------------
    def start(self) -> "StatsWatch":
        """Subscribe to the lab's updates, read its current state and display it.  Returns at once.

        Subscribe first: a report that arrives while the state is read is queued, not lost (the pump starts only
        after the first display, so updates never overtake it).
        """
        live = self.live_capable
        if live:
            self._pump = UpdatePump(self._apply, min_gap=MIN_UPDATE_GAP, name="balloonlab-watch", start=False)
            self._unsubscribe = self.lab.subscribe(self._pump.put)
        try:
            self._stats = self.lab.stats()
            self._interval = self.lab.polling_interval
            self._actual = self.lab.actual
            if not live:
                self._state = "snapshot"
                self._note = "live updates need a Jupyter front end; run %balloon stats to refresh"
            elif not getattr(self.lab, "exclusive", True):  # client/shared.py: nothing is held between reads
                self._note = "polling the shared QMP socket (exclusive=False): no events between reads"
            data, metadata = self.shell.display_formatter.format(self.view())
            self.shell.display_pub.publish(data=data, metadata=metadata, transient={"display_id": self.display_id})
        except BaseException:
            self._detach()  # no half-started watch left subscribed
            raise
        if self._pump is not None:
            self._pump.start()
        return self

    def _detach(self) -> Callable[[], None] | None:
        """Forget the subscription and stop the pump; returns the unsubscribe function (None if already done)."""
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:  # the lab may already be closed: nothing left to unsubscribe from
                log.debug("watch %s: unsubscribe failed", self.display_id, exc_info=True)
        if self._pump is not None:
            self._pump.stop()  # from the pump's own thread (a disconnect) it only marks it stopping
        return unsubscribe

    def stop(self, state: str = "stopped") -> None:
        """Unsubscribe and show the final state (``stopped``, or ``disconnected`` when the lab went away)."""
        with self._lock:
            if self._unsubscribe is None:
                return
            self._state = state
        if self._detach() is not None:
            self._publish()

    @property
    def active(self) -> bool:
        return self._unsubscribe is not None

    @property
    def live_capable(self) -> bool:
        """True when the shell's display publisher understands ``update_display_data`` (see has_live_display)."""
        return has_live_display(self.shell)

    def view(self) -> StatsView:
        with self._lock:
            return StatsView(self._stats, interval=self._interval, actual=self._actual, reports=self.reports,
                             state=self._state, note=self._note)

    # the pump's thread -------------------------------------------------------------------------------------------
    def _apply(self, updates: list[Any]) -> None:
        """A batch of lab updates: merge them, then publish once (the pump throttles and reports failures)."""
        changed = disconnected = False
        with self._lock:
            if self._unsubscribe is None:
                return  # stopped meanwhile: stop() publishes the final state
            for update in updates:
                kind = getattr(update, "kind", None)
                if kind == "stats" and getattr(update, "stats", None) is not None:
                    if update.stats is not self._stats:  # the very report start() read is no refresh
                        self._stats = update.stats
                        self.reports += 1
                        changed = True
                elif kind == "interval":
                    self._interval, changed = update.interval, True
                elif kind == "actual":
                    self._actual, changed = update.actual, True
                elif kind == "disconnected":
                    self._note, disconnected = "QEMU went away", True
        if disconnected:
            self.stop("disconnected")
        elif changed:
            self._publish()

    def _publish(self) -> None:
        if not self.live_capable:
            return
        view = self.view()
        data, metadata = self.shell.display_formatter.format(view)
        # A fresh context: ipykernel then sends the update with the parent header of the request it handles now
        # (its global one), not with whatever cell's header this thread happened to copy.  Front ends apply
        # update_display_data by display id wherever it is; nbclient only reads messages of the running cell.
        contextvars.Context().run(
            self.shell.display_pub.publish,
            data=data, metadata=metadata, transient={"display_id": self.display_id}, update=True,
        )
        with self._lock:
            self.published += 1
