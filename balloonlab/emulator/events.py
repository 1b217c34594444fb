"""QMP events as QEMU's monitor sends them: wire dicts with host timestamps, and QEMU's per-event rate limit.

QEMU throttles a few events (``monitor_qapi_event_conf``); for the balloon it is ``BALLOON_CHANGE``, at most one
per 1000 ms of the realtime clock: the first is sent at once, later ones within the period replace each other
(the last one wins, keeping its own timestamp) and the survivor is sent when the period ends, which starts the
next period.  A period that ends with nothing pending ends the throttling.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .clock import HOST, NS, Clock

log = logging.getLogger(__name__)

#: Throttled events and their period (ns of the host clock).
EVENT_RATE_NS = {"BALLOON_CHANGE": NS}


class MonitorEvents:
    """Builds, throttles and delivers events to listeners (the QMP server broadcasts them to clients)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._listeners: list[Callable[[dict], None]] = []
        self._throttle: dict[str, list] = {}  # event name -> [timer, pending event | None]

    def add_listener(self, cb: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``cb(event_dict)`` for every event; returns the unsubscribe function."""
        self._listeners.append(cb)

        def unsubscribe() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)
        return unsubscribe

    def _timestamp(self) -> dict:
        now = self.clock.wall_time()
        seconds = int(now)
        return {"seconds": seconds, "microseconds": min(999_999, int((now - seconds) * 1e6))}

    def emit(self, name: str, data: dict | None = None) -> None:
        """Send an event now, or hold it back if its kind is being throttled."""
        event = {"timestamp": self._timestamp(), "event": name}
        if data is not None:
            event["data"] = data
        rate = EVENT_RATE_NS.get(name)
        if rate is None:
            self._deliver(event)
            return
        state = self._throttle.get(name)
        if state is None:
            self._deliver(event)
            timer = self.clock.new_timer(HOST, lambda: self._period_end(name))
            self._throttle[name] = [timer, None]
            timer.mod_in(rate)
        else:
            state[1] = event  # coalesced: the last one wins

    def _period_end(self, name: str) -> None:
        state = self._throttle[name]
        if state[1] is None:
            del self._throttle[name]
            return
        event, state[1] = state[1], None
        self._deliver(event)
        state[0].mod_in(EVENT_RATE_NS[name])

    def _deliver(self, event: dict) -> None:
        for cb in list(self._listeners):
            try:
                cb(event)
            except Exception:  # a broken listener must not break the device that emitted the event
                log.exception("event listener failed on %s", event.get("event"))

    def shutdown(self) -> None:
        """Drop held-back events and their timers."""
        for timer, _ in self._throttle.values():
            timer.delete()
        self._throttle.clear()
