"""``BalloonPanel(lab)``: the lab as one widget -- sliders, live stats, doctor, plot, event log, virtqueue.

Threads, and why each part runs where it does:

* The panel is built and displayed in the cell (the kernel's thread); every view is created there.
* ``lab.subscribe`` calls :meth:`BalloonPanel._on_update` on the lab's background loop thread.  That callback only
  queues the update (:class:`~balloonlab.client.pump.UpdatePump`): the loop must never block, and lab methods
  cannot be called from it.
* The pump's thread applies queued updates in batches (at most ``max_rate`` per second), pushing cheap samples
  into the views and then rendering each view once; a view sends a message only when its state really changed.
  It also runs what the sliders request (``lab.polling_interval = n``, ``lab.set_target``), so a comm handler
  never waits on QMP and a refusal from QEMU lands in the status line instead of in a handler's traceback.
* Nothing here uses ``Output`` widgets, ``print`` or ``clear_output`` from a thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import ipywidgets as widgets
from traitlets import Bool, Float, Int, Unicode, observe, validate

from ..client.doctor import Diagnosis, diagnose, stale_after
from ..errors import BalloonError, QMPError
from ..qapi import RunState
from ..stats import GuestStats
from ..units import format_size
from ._html import SEVERITY_COLOUR, esc, set_if_changed, style_widget
from ..client.pump import UpdatePump
from .controls import MiB, IntervalControl, TargetControl
from .events import EventLog, event_time
from .live import LiveView
from .plot import MemoryPlot
from .stats_table import DoctorView, LastUpdateView, StatsTable
from .virtqueue import VirtqueueView

log = logging.getLogger("balloonlab.widgets")

#: Events marked on the plot as run-state changes (BALLOON_CHANGE has its own marker).
STATE_EVENTS = frozenset({"STOP", "RESUME", "RESET", "SHUTDOWN", "POWERDOWN", "SUSPEND", "WAKEUP"})
#: What an event says about the run state (query-status's running and status).
RUN_STATE: dict[str, tuple[bool, RunState]] = {"STOP": (False, "paused"), "RESUME": (True, "running"),
                                               "SHUTDOWN": (False, "shutdown")}


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, QMPError):
        return f"QEMU refused it: {exc.error_class}: {exc.desc}"
    return f"{type(exc).__name__}: {exc}"


class BalloonPanel(LiveView):
    """Everything about one lab's balloon, live: ``BalloonPanel(lab)`` (what ``%balloon panel`` shows).

    Public parts: ``interval_slider`` and ``target_slider`` (ipywidgets ``IntSlider``), ``stats_table``,
    ``last_update``, ``doctor``, ``plot``, ``events``, ``virtqueue`` (None unless the lab is emulated),
    ``status_line``.

    The panel outlives its lab: when the lab is closed (``lab.close()``, ``%balloon close``) the panel freezes
    (:meth:`freeze`): it stops following, keeps its last stats, plot and events on screen, disables the sliders
    and says the lab is closed, so a notebook run with Run All and saved still shows what happened.
    :meth:`close` unsubscribes from the lab and closes every widget the panel made: the panel disappears.
    """

    max_points = Int(600, help="Reports kept in the plot's window (older ones drop out).")
    max_events = Int(100, help="Entries kept in the event log.")
    max_rate = Float(10.0, help="Most view updates per second sent to the browser (bursts are batched).")
    doctor_period = Float(1.0, help="Least seconds between two re-sends of an unchanged verdict (its message "
                                    "carries an age), and between two reads of a virtual clock's time.")
    trace_period = Float(1.0, help="Least seconds between two x-balloonlab-trace reads for the virtqueue view "
                                   "(read only while that view is open).")
    status = Unicode("", help="The status line: what the panel last did, or why it could not.")
    status_severity = Unicode("info", help="'info', 'ok', 'warning' or 'error': the status line's colour.")
    connected = Bool(True, help="False once the lab reported that its QMP connection is gone.")

    def __init__(self, lab: Any, *, max_points: int = 600, max_events: int = 100, max_rate: float = 10.0,
                 **kwargs: Any) -> None:
        super().__init__(max_points=max_points, max_events=max_events, max_rate=max_rate, **kwargs)
        self.lab = lab
        self.add_class("balloonlab-panel")
        self._closed = False
        self._frozen = False
        self._virtual_clock = False
        self._device_time: float | None = None  # newest device-side timestamp seen (last-update, events)
        self._device_now: float | None = None  # a virtual clock's "now", as last read from the emulator
        self._last_interval: int | None = None
        self._interval_since: float | None = None  # when polling was last turned on or changed (clock of _now())
        self._doctor_due = True
        self._doctor_at = 0.0
        self._clock_at = 0.0
        self._running: bool | None = None  # run state, from query-status and then STOP/RESUME/SHUTDOWN events
        self._run_state: RunState | None = None
        self._trace_due = False
        self._trace_at = 0.0

        self.header = widgets.HTML()
        self.header.add_class("balloonlab-header")
        self.status_line = widgets.HTML()
        self.status_line.add_class("balloonlab-status")
        # RAM from query-memory-size-summary; a QEMU without it: the actual size at start is the best guess.
        ram_size = self._quietly(lambda: lab.ram_size or lab.actual, 0) or 0
        self.interval_control = IntervalControl(self._request_interval)
        self.target_control = TargetControl(ram_size, self._request_target)
        self.interval_slider: widgets.IntSlider = self.interval_control.slider
        self.target_slider: widgets.IntSlider = self.target_control.slider
        self.stats_table = StatsTable()
        self.last_update = LastUpdateView()
        self.doctor = DoctorView()
        self.plot = MemoryPlot(max_points=max_points, ram_size=ram_size)
        self.events = EventLog(max_events=max_events)
        self.virtqueue: VirtqueueView | None = None
        #: The virtqueue view inside a collapsed Accordion: the trace is read only while it is open, so a panel
        #: nobody looks into costs no x-balloonlab-trace round trip per report.
        self.virtqueue_box: widgets.Accordion | None = None
        if getattr(lab, "backend", None) == "emulated":
            self.virtqueue = VirtqueueView()
            self.virtqueue_box = widgets.Accordion(
                children=[self.virtqueue], titles=("stats virtqueue: who holds the buffer, the last report's bytes",),
                selected_index=None)
            self.virtqueue_box.add_class("balloonlab-virtqueue-box")
            self.virtqueue_box.observe(self._virtqueue_toggled, "selected_index")

        stats_box = widgets.VBox([self.stats_table, self.last_update, self.doctor])
        stats_box.add_class("balloonlab-stats-box")
        middle = widgets.HBox([stats_box, self.events], layout=widgets.Layout(flex_flow="row wrap"))
        self.children = [
            style_widget(), self.header, self.status_line,
            widgets.HBox([self.interval_control, self.target_control], layout=widgets.Layout(flex_flow="row wrap")),
            middle, self.plot, *([self.virtqueue_box] if self.virtqueue_box is not None else []),
        ]

        # Subscribe before reading the initial state: an update that races the reads is queued, not lost; the
        # pump's thread starts only once the views hold that state, so only one thread ever writes them.
        self._pump = UpdatePump(self._apply, tick=self._tick, on_error=self._show_error,
                                min_gap=1.0 / max_rate, name="balloonlab-panel", start=False)
        self._unsubscribe: Callable[[], None] | None = lab.subscribe(self._on_update)
        try:
            self._load_initial_state(lab)
        except BaseException:
            self.close()  # no half-built panel left subscribed
            raise
        self._pump.start()

    # -- construction ------------------------------------------------------------------------------------------
    def _quietly(self, read: Callable[[], Any], default: Any = None) -> Any:
        try:
            return read()
        except BalloonError as exc:
            self._set_status(f"could not read the lab: {_describe_error(exc)}", "error")
            return default

    def _load_initial_state(self, lab: Any) -> None:
        info = []
        backend = getattr(lab, "backend", "?")
        if backend == "emulated":
            status = self._quietly(lambda: lab.qmp("x-balloonlab-status"), {}) or {}
            self._virtual_clock = status.get("clock") == "virtual"
            if self._virtual_clock and isinstance(status.get("wall-clock"), (int, float)):
                self._device_now = float(status["wall-clock"])
            self.last_update.virtual_clock = self._virtual_clock
            info.append(f"emulated QEMU {esc(str(status.get('qemu-version', '')))}, guest "
                        f"<b>{esc(str(status.get('guest', '?')))}</b>, {esc(str(status.get('clock', '?')))} clock")
        elif backend == "libvirt":
            info.append(f"libvirt domain <b>{esc(str(getattr(lab, 'name', '?')))}</b>")
        else:
            info.append(esc(str(backend)))
        info.append(f"device <code>{esc(str(self._quietly(lambda: lab.device_path, '?')))}</code>")
        info.append(f"RAM {esc(format_size(self.target_control.ram_size))}")
        self.header.value = "<b>balloonlab</b> &middot; " + " &middot; ".join(info)

        interval = self._quietly(lambda: lab.polling_interval)
        if interval is not None:
            self._last_interval = interval
            self.interval_control.binding.show(interval)
        actual = self._quietly(lambda: lab.actual)
        if actual is not None:
            self.target_control.actual = actual
        # The slider shows the last target requested through this lab; before any, the actual size.
        target = getattr(lab, "target", None)
        if target is not None or actual is not None:
            self._show_target(target if target is not None else actual)
        self._seed_plot(lab)
        stats = self._quietly(lambda: lab.stats())
        if stats is not None:
            self._take_stats(stats)
            self.stats_table.render()
            self.last_update.last_update = stats.last_update
        for event in (self._quietly(lambda: list(lab.events), []) or [])[-self.max_events:]:
            self._take_event(event)
        # After replaying old events (which would say an old run state): what QEMU says now.
        self._read_run_state()
        self.events.render()
        self.plot.render()
        self._doctor_due = True
        self._refresh_doctor(ask_lab=True)
        if not self.status:
            if getattr(lab, "exclusive", True):
                self._set_status("live: updates as the lab reports them", "ok")
            else:  # client/shared.py: no connection between reads, so no events
                self._set_status("polling: the QMP socket is shared (exclusive=False), so the panel reads the lab "
                                 "every few seconds and sees no events between reads", "ok")

    def _read_run_state(self) -> None:
        """query-status (the pump's thread or the cell's, never the lab's loop): at start, and after a reconnect,
        where QEMU may have been restarted paused and no STOP event says so."""
        # lab.run_state, not raw QMP: on a libvirt lab raw QMP would taint the domain.
        status = self._quietly(lambda: self.lab.run_state)
        self._running, self._run_state = (None if status is None else status == "running"), status

    def _seed_plot(self, lab: Any) -> None:
        """Start the plot with what the lab's history already holds (if a watch recorded before)."""
        history = getattr(lab, "history", None)
        try:
            if history is None or len(history) == 0:
                return
            # One read of all five (one lock hold, one decode): the follower may append meanwhile, and separate
            # reads could then differ in length and pair one report's time with another's values.
            columns = {c: v[-self.max_points:] for c, v in history.columns_dict(
                ("last-update", "free-memory", "available-memory", "total-memory", "disk-caches")).items()}
        except Exception:
            log.debug("balloonlab panel: cannot seed the plot from the history", exc_info=True)
            return
        previous = None
        for i, when in enumerate(columns["last-update"]):
            if when and when != previous:
                self.plot.add_sample(float(when), {k: v[i] for k, v in columns.items() if k != "last-update"})
                previous = when

    # -- the lab's thread: queue only ---------------------------------------------------------------------------
    def _on_update(self, update: Any) -> None:
        self._pump.put(update)

    # -- the pump's thread ------------------------------------------------------------------------------------
    def _apply(self, updates: list[Any]) -> None:
        if self._closed or self._frozen:
            return
        new_stats = interval = actual = target = None
        disconnected: str | None = None
        alive = dropped = False
        for u in updates:
            kind = u.kind
            if kind == "disconnected":
                disconnected = getattr(u, "error", None) or "the lab's QMP connection is gone"
                alive, dropped = False, True
                continue
            alive, disconnected = True, None  # a live update after a disconnect: the lab is back
            if kind == "stats" and u.stats is not None:
                if self._take_stats(u.stats):
                    new_stats = u.stats
            elif kind == "interval" and u.interval is not None:
                interval = u.interval
                self._take_interval(u.interval, getattr(u, "time", None))
            elif kind == "actual" and u.actual is not None:
                actual = u.actual
            elif kind == "target" and getattr(u, "target", None) is not None:
                target = u.target
            elif kind == "event" and u.event is not None:
                self._take_event(u.event)
                data = u.event.get("data") or {}
                if u.event.get("event") == "BALLOON_CHANGE" and isinstance(data.get("actual"), int):
                    actual = data["actual"]
        # One render per view per batch; each sends only if its state changed.
        if new_stats is not None:
            self.stats_table.render()
            self.last_update.last_update = new_stats.last_update
            self._doctor_due = self._trace_due = True
            self._doctor_at = 0.0  # "answered N s ago" must not contradict the fresh last-update line
        if interval is not None:
            self.interval_control.binding.show(interval)
            self._doctor_due = self._trace_due = True
        if actual is not None:
            self.target_control.actual = actual
        if target is not None:
            self._show_target(target)
        self.plot.render()
        self.events.render()
        if disconnected is not None:
            self._set_connected(False, disconnected)
        elif alive and (dropped or not self.connected):
            self._set_connected(True)  # also when the drop and the reconnect came in one batch: re-read the state
        if self.connected:
            self._refresh_doctor()
            if self._trace_due:
                self._refresh_trace(idle=True)

    def _show_target(self, target: int) -> None:
        """Move the target slider to ``target`` bytes (QEMU treats a target above RAM as RAM)."""
        ram = self.target_control.ram_size
        self.target_control.binding.show(max(1, round((min(target, ram) if ram else target) / MiB)))

    def _take_stats(self, stats: Any) -> bool:
        """Record a report in the table and the plot; True when it is a new one."""
        if not self.stats_table.push(stats):
            return False
        seconds = getattr(stats, "last_update_seconds", None)
        if seconds is None and stats.last_update is not None:
            seconds = stats.last_update.timestamp()
        last = self.plot.last_time
        if seconds and (last is None or seconds > last):  # time only moves forward on the plot's x axis
            self.plot.add_sample(float(seconds), stats)
            self._device_time = max(self._device_time or 0.0, float(seconds))
        return True

    def _now(self) -> float:
        """Now on the clock last-update is on: this machine's, or (virtual clock) the newest device time known."""
        if not self._virtual_clock:
            return time.time()
        return max(self._device_now or 0.0, self._device_time or 0.0) or time.time()

    def _take_interval(self, interval: int, observed: float | None) -> None:
        """A new polling interval (from the lab, or applied from the slider; the second sighting is a no-op)."""
        if interval == self._last_interval:
            return
        before, self._last_interval = self._last_interval, interval
        self._interval_since = self._now() if interval else None
        self._doctor_due, self._doctor_at = True, 0.0  # the message names the interval: re-send it now
        # On a virtual clock, host time means nothing to the device: mark the change at the newest device time.
        when = self._device_time if self._virtual_clock and self._device_time else (observed or time.time())
        self.plot.add_marker(when, "interval")
        change = f"{before} s \u2192 {interval} s" if before is not None else f"{interval} s"
        self.events.add_note(f"polling interval {change}", when, kind="interval")

    def _take_event(self, event: dict) -> None:
        self.events.add_event(event)
        name = event.get("event")
        if name in RUN_STATE:
            self._running, self._run_state = RUN_STATE[name]
        when = event_time(event)
        if when is None:
            return
        self._device_time = max(self._device_time or 0.0, when)
        if name == "BALLOON_CHANGE":
            self.plot.add_marker(when, "balloon")
        elif name in STATE_EVENTS:
            self.plot.add_marker(when, "state")

    def _tick(self) -> None:
        """About once a second: the age of the last report, the doctor, where the stats buffer is (if shown)."""
        if self._closed:
            return
        self.last_update.tick()
        # lab.close() ends the connection without a "disconnected" update: ask the lab itself.
        lab_connected = getattr(self.lab, "connected", None)
        if lab_connected is False and self.connected:
            self._set_connected(False, "the lab was closed" if getattr(self.lab, "closed", False)
                                else "lost the QMP connection to QEMU")
        elif lab_connected and not self.connected:
            self._set_connected(True)
        if self.connected:
            self._read_device_clock()
            self._refresh_doctor(ask_lab=True)
            self._refresh_trace(idle=True)

    def _read_device_clock(self) -> None:
        """A virtual clock moves only with lab.advance(): read its time (one round trip) every doctor_period, so
        a guest that stopped answering still turns "stale" although no report says that time went on."""
        if not self._virtual_clock or time.monotonic() - self._clock_at < self.doctor_period:
            return
        self._clock_at = time.monotonic()
        try:
            wall = self.lab.qmp("x-balloonlab-status").get("wall-clock")
        except BalloonError as exc:
            log.debug("balloonlab panel: reading the virtual clock failed: %s", exc)
            return
        if isinstance(wall, (int, float)) and wall != self._device_now:
            self._device_now = float(wall)
            self._doctor_due = True

    def _refresh_doctor(self, ask_lab: bool = False) -> None:
        """The doctor's verdict, from what the panel holds, without a QMP round trip per report.

        The panel runs the doctor's own pure ``diagnose`` on the latest report, the interval and the run state
        (query-status, then STOP/RESUME/SHUTDOWN events), at "now" on the report's clock (a virtual clock's now is
        read from the emulator by the tick).  So the verdict follows every new report and every interval change at
        once -- the same verdict ``lab.doctor()`` gives, minus its four round trips.  An unchanged verdict is
        re-sent at most every ``doctor_period`` (its message carries an age).  Only a panel that could not read
        all of that asks ``lab.doctor()`` (from the tick, ``ask_lab``), at most every ``doctor_period``.
        """
        if not self.connected:
            return  # the "disconnected" verdict stays until the lab is back
        stats, interval = self.stats_table.current, self._last_interval
        now = time.monotonic()
        if isinstance(stats, GuestStats) and interval is not None and self._running is not None:
            device_now = self._now()
            diagnosis = diagnose(stats, interval, now=device_now, running=bool(self._running),
                                 run_state=self._run_state)
            diagnosis = self._just_changed(diagnosis, interval, device_now)
            if (diagnosis.verdict, diagnosis.severity) != (self.doctor.verdict, self.doctor.severity) \
                    or now - self._doctor_at >= self.doctor_period:
                self._doctor_due, self._doctor_at = False, now
                self.doctor.show(diagnosis)
            return
        if ask_lab and self._doctor_due and now - self._doctor_at >= self.doctor_period:
            self._doctor_due, self._doctor_at = False, now
            try:
                self.doctor.show(self.lab.doctor())
            except BalloonError as exc:
                self._doctor_due = True
                log.debug("balloonlab panel: doctor failed: %s", exc)

    def _just_changed(self, diagnosis: Diagnosis, interval: int, device_now: float) -> Diagnosis:
        """"stale" right after polling was turned on or changed is not yet true: the first report under the new
        interval may still be on its way.  Until it is overdue, say that instead of raising a false alarm."""
        since = self._interval_since
        if diagnosis.verdict != "stale" or not interval or since is None or device_now - since > stale_after(interval):
            return diagnosis
        return Diagnosis(
            "waiting", f"Polling was just set to every {interval} s; the first report at that interval is due "
            "shortly (the stats shown are older).", "ok", dict(diagnosis.details))

    def _virtqueue_toggled(self, change: dict) -> None:
        # A comm handler (the user opened or closed the view): queue only; the pump's thread reads the trace.
        if change["new"] is not None:
            self._trace_due = True
            self._pump.submit(lambda: self._refresh_trace())

    @property
    def virtqueue_open(self) -> bool:
        """True while the virtqueue view is expanded (only then is the trace read)."""
        return self.virtqueue_box is not None and self.virtqueue_box.selected_index is not None

    def _refresh_trace(self, idle: bool = False) -> None:
        """Read the emulator's trace since the last read, only while the virtqueue view is open.

        ``idle`` (from a batch or the tick): at most once per ``trace_period``, and from the tick also without a
        new report (a request without a report, e.g. a buggy guest, only shows up there).  Without ``idle`` (the
        view was just opened): now.
        """
        if self.virtqueue is None or not self.virtqueue_open or self._closed:
            return
        if idle and time.monotonic() - self._trace_at < self.trace_period:
            return
        self._trace_due, self._trace_at = False, time.monotonic()
        try:
            self.virtqueue.show(self.lab.trace(self.virtqueue.next_seq))
        except BalloonError as exc:
            log.debug("balloonlab panel: trace failed: %s", exc)

    # -- requests from the sliders (a comm handler's thread: queue only) -----------------------------------------
    def _request_interval(self, value: int) -> None:
        def applied() -> None:
            # Known now: the doctor, the plot and the log follow at once, not a batch later.
            self._take_interval(value, time.time())
            self._refresh_doctor()
            self.plot.render()
            self.events.render()

        self._pump.submit(lambda: self._apply_request(
            lambda: setattr(self.lab, "polling_interval", value), self.interval_control.binding, value,
            f"polling interval {value} s", applied))

    def _request_target(self, mib: int) -> None:
        self._pump.submit(lambda: self._apply_request(
            lambda: self.lab.set_target(mib * MiB), self.target_control.binding, mib, f"balloon target {mib} MiB"))

    def _apply_request(self, apply: Callable[[], None], binding: Any, value: int, what: str,
                       applied: Callable[[], None] | None = None) -> None:
        if self._closed:
            return
        try:
            apply()
        except Exception as exc:
            binding.refused(value)
            self._set_status(f"could not set {what}: {_describe_error(exc)}", "error")
            return
        self._doctor_due = self._trace_due = True
        if applied is not None:
            applied()  # before the slider's label confirms the value, so the doctor never lags behind it
        binding.applied(value)
        self._set_status(f"set {what}", "ok")

    # -- status ------------------------------------------------------------------------------------------------
    def _show_error(self, exc: BaseException) -> None:
        self._set_status(f"panel update failed: {_describe_error(exc)}", "error")

    def _set_status(self, text: str, severity: str = "info") -> None:
        with self.hold_trait_notifications():
            self.status_severity = severity
            self.status = text

    @observe("status", "status_severity")
    def _render_status(self, _change: Any = None) -> None:
        colour = SEVERITY_COLOUR.get(self.status_severity, SEVERITY_COLOUR["info"])
        set_if_changed(self.status_line, "value",
                       f"<span style='color:{colour}' data-severity='{esc(self.status_severity)}'>"
                       f"{esc(self.status)}</span>")

    def _set_connected(self, connected: bool, reason: str = "") -> None:
        if not connected and getattr(self.lab, "closed", False):
            self.freeze(reason)  # closed for good: nothing more will come, keep what is shown
            return
        self.connected = connected
        for slider in (self.interval_slider, self.target_slider):
            set_if_changed(slider, "disabled", not connected)
        if connected:
            self.remove_class("balloonlab-disconnected")
            self._read_run_state()  # a QEMU restarted paused sends no STOP: the old running flag would stay
            self._set_status("reconnected: live again", "ok")
            self._doctor_due, self._doctor_at = True, 0.0
            self._refresh_doctor(ask_lab=True)
        else:
            self.add_class("balloonlab-disconnected")
            self.events.add_note(reason, time.time(), kind="disconnected")
            self.events.render()
            self._set_status(f"disconnected: {reason}", "error")
            # The last verdict ("healthy -- answered 1 s ago") would go on claiming a live guest: say why not.
            vm = getattr(self.lab, "vm", None)
            if getattr(self.lab, "closed", False):
                again = "this lab is closed for good: start a new one"
            elif vm is not None and not vm.alive:  # the QEMU this lab started is gone: nothing will come back
                again = "the QEMU this lab started has ended: start a new lab with balloonlab.launch()"
            else:
                again = "lab.reconnect() connects again once QEMU is back"
            self.doctor.show(Diagnosis(
                "disconnected", f"No connection to QEMU ({reason}): the stats shown are the last ones read, not "
                f"live; {again}.", "error"))

    # -- configuration -----------------------------------------------------------------------------------------
    @validate("max_rate")
    def _valid_rate(self, proposal: dict) -> float:
        if not proposal["value"] > 0:
            raise ValueError("max_rate must be > 0 updates per second")
        return proposal["value"]

    @observe("max_rate")
    def _rate_changed(self, change: dict) -> None:
        if hasattr(self, "_pump"):
            self._pump.min_gap = 1.0 / change["new"]

    @observe("max_points")
    def _points_changed(self, change: dict) -> None:
        if hasattr(self, "plot"):
            self.plot.max_points = change["new"]

    @observe("max_events")
    def _events_changed(self, change: dict) -> None:
        if hasattr(self, "events"):
            self.events.max_events = change["new"]

    # -- lifetime ----------------------------------------------------------------------------------------------
    def update_cost(self) -> dict[str, float]:
        """CPU (``time.thread_time``) the panel's thread spent, in milliseconds: applying lab updates (per batch,
        per update) and in its once-a-second ticks (ages, local diagnosis, virtqueue trace when idle)."""
        p = self._pump
        return {
            "batches": p.batches,
            "updates": p.items,
            "cpu_ms": p.cpu_seconds * 1e3,
            "cpu_ms_per_batch": p.cpu_seconds * 1e3 / p.batches if p.batches else 0.0,
            "cpu_ms_per_update": p.cpu_seconds * 1e3 / p.items if p.items else 0.0,
            "ticks": p.ticks,
            "tick_cpu_ms": p.tick_cpu_seconds * 1e3,
            "tick_cpu_ms_per_tick": p.tick_cpu_seconds * 1e3 / p.ticks if p.ticks else 0.0,
        }

    @property
    def frozen(self) -> bool:
        """True once the panel stopped following a closed lab (its widgets stay, showing the last state)."""
        return self._frozen

    def freeze(self, reason: str = "") -> None:
        """Stop following the lab and keep the last state on screen: sliders disabled, status "closed".

        Called when the lab is closed (from the panel's thread on the lab's last update, or by ``%balloon close``
        on the cell's thread, so the cell that closes the lab ends with the panel already saying so).  Idempotent;
        :meth:`close` still removes the panel.
        """
        if self._frozen or self._closed:
            return
        self._frozen = True
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        self._pump.stop()  # from the pump's own thread this only marks it stopping
        self.connected = False
        for slider in (self.interval_slider, self.target_slider):
            set_if_changed(slider, "disabled", True)
        self.add_class("balloonlab-closed")
        why = reason or "the lab was closed"
        self.events.add_note(why, time.time(), kind="closed")
        self.events.render()
        self.doctor.show(Diagnosis(
            "closed", "The lab is closed: the stats, plot and events shown are its last ones (start a new lab with "
            "balloonlab.emulate(), connect() or launch()).", "info"))
        self._set_status(f"closed: {why}; the numbers shown are the last ones read", "info")

    def close(self) -> None:
        """Remove the panel: unsubscribe, stop its thread, close every widget (a frozen panel too)."""
        self._frozen = True
        super().close()
