"""Time for the emulated QEMU: a host clock, a VM clock that stops while the VM is paused, and timers on both.

QEMU keeps several clocks.  Two matter for the balloon:

* the *host* clock (QEMU_CLOCK_REALTIME / wall time): event timestamps, ``last-update``, and the monitor's
  one-per-second rate limit of ``BALLOON_CHANGE`` run on it; it never stops.
* the *VM* clock (QEMU_CLOCK_VIRTUAL): the stats polling timer and everything the guest does run on it; it
  stands still while the VM is paused (``-S``, ``stop``) and goes on after ``cont``.

A :class:`Clock` is either ``"real"`` (host time is the machine's time, or a multiple of it for a replay at
``speed=10``; timers are run by the asyncio loop) or
``"virtual"`` (time moves only when :meth:`Clock.advance` is called, which runs every due timer in time order, so
24 hours of polling take well under a second of CPU).  Both modes share one timer implementation: a heap per
clock kind with lazy deletion, so re-arming a timer costs one ``heappush`` and no other allocation.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from ..errors import VirtualClockRequiredError

HOST = "host"
VM = "vm"
log = logging.getLogger(__name__)

NS = 1_000_000_000
_INF = float("inf")


_STALE_SLACK = 64  #: stale heap entries tolerated before a compaction is considered


class Timer:
    """A one-shot timer on the host or VM clock (QEMU's ``timer_new_ms`` / ``timer_mod`` / ``timer_del``)."""

    __slots__ = ("_clock", "kind", "callback", "_entry")

    def __init__(self, clock: Clock, kind: str, callback: Callable[[], None]) -> None:
        self._clock = clock
        self.kind = kind
        self.callback = callback
        self._entry: list | None = None

    @property
    def pending(self) -> bool:
        """True while the timer is armed and has not fired yet."""
        return self._entry is not None

    @property
    def expire_ns(self) -> int | None:
        """When the timer fires, in ns of its clock; None when it is not armed."""
        return None if self._entry is None else self._entry[0]

    def mod(self, expire_ns: int) -> None:
        """Arm (or re-arm) the timer to fire when its clock reads ``expire_ns``."""
        self._clock._arm(self, int(expire_ns))

    def mod_in(self, delay_ns: int) -> None:
        """Arm the timer ``delay_ns`` from now on its own clock."""
        self._clock._arm(self, self._clock.now_ns(self.kind) + int(delay_ns))

    def delete(self) -> None:
        """Disarm the timer (no-op when it is not armed)."""
        if self._entry is not None:
            self._entry = None
            self._clock._stale += 1
            self._clock._changed()


class Clock:
    """Host and VM time plus timers, real or virtual.  Created and used on the asyncio loop's thread only."""

    def __init__(self, mode: str = "real", loop: asyncio.AbstractEventLoop | None = None,
                 start_epoch: float | None = None, speed: float = 1.0, start_ns: int = 0) -> None:
        """``start_epoch``: the wall-clock time at which this clock starts (default: now); a replay starts at
        the recording's start so that ``last-update`` and event timestamps read as recorded.  ``speed``: on the
        real clock, machine seconds per host second (a replay at ``speed=10`` lives ten seconds in each).
        ``start_ns``: on the virtual clock, the host time it starts at (a VM that joins a host of VMs later starts
        at the host's time, so all read one clock)."""
        if mode not in ("real", "virtual"):
            raise ValueError(f"clock mode must be 'real' or 'virtual', not {mode!r}")
        if not 0 < speed < float("inf"):
            raise ValueError(f"clock speed must be a positive finite number, not {speed!r}")
        self.mode = mode
        self.speed = float(speed)
        self.loop = loop
        self._seq = itertools.count()
        self._heaps: dict[str, list] = {HOST: [], VM: []}
        #: Disarmed entries still in the heaps (deletion is lazy).  Far-future ones would never reach the top, so
        #: the heaps are rebuilt when they are mostly stale: re-arming cannot grow memory without bound.
        self._stale = 0
        self._vm_running = False
        self._vm_base = 0  # VM ns accumulated up to the last pause/resume
        self._vm_since = 0  # host ns of the last resume
        self._dispatching = False
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = _INF
        self._closed = False
        if mode == "real":
            self._host_origin = time.monotonic_ns()
            self._epoch = time.time() if start_epoch is None else float(start_epoch)
            #: A machine's own time runs apart from the host's (replays): wall = epoch + host seconds.
            self._own_wall = start_epoch is not None or self.speed != 1.0
            self._virtual_host = 0
        else:
            self._host_origin = 0
            self._epoch = time.time() if start_epoch is None else float(start_epoch)
            self._own_wall = True
            self._virtual_host = start_ns
            self._vm_since = start_ns
        self._epoch_ns = round(self._epoch * NS)

    # -- reading the clocks -------------------------------------------------------------------------------
    def host_ns(self) -> int:
        """Host monotonic time in ns since the clock was made."""
        if self.mode == "real":
            elapsed = time.monotonic_ns() - self._host_origin
            return elapsed if self.speed == 1.0 else int(elapsed * self.speed)
        return self._virtual_host

    def vm_ns(self) -> int:
        """VM clock in ns: advances only while the VM runs."""
        if self._vm_running:
            return self._vm_base + self.host_ns() - self._vm_since
        return self._vm_base

    def now_ns(self, kind: str) -> int:
        return self.vm_ns() if kind == VM else self.host_ns()

    def wall_time(self) -> float:
        """Host wall-clock seconds since the Unix epoch (``last-update``, event timestamps)."""
        if not self._own_wall:
            return time.time()
        return self._epoch + self.host_ns() / NS

    def wall_ns(self) -> int:
        """:meth:`wall_time` in integer nanoseconds (what the report log keeps)."""
        if self.mode == "real":
            return time.time_ns()
        return self._epoch_ns + self._virtual_host

    @property
    def vm_running(self) -> bool:
        return self._vm_running

    # -- run state (called by the machine) ------------------------------------------------------------------
    def vm_start(self) -> None:
        """The VM runs: the VM clock moves with the host clock again."""
        if not self._vm_running:
            self._vm_since = self.host_ns()
            self._vm_running = True
            self._changed()

    def vm_stop(self) -> None:
        """The VM pauses: the VM clock stands still and no VM timer fires."""
        if self._vm_running:
            self._vm_base = self.vm_ns()
            self._vm_running = False
            self._changed()

    # -- timers ---------------------------------------------------------------------------------------------
    def new_timer(self, kind: str, callback: Callable[[], None]) -> Timer:
        """A disarmed timer on the ``"host"`` or ``"vm"`` clock."""
        if kind not in (HOST, VM):
            raise ValueError(f"timer clock must be 'host' or 'vm', not {kind!r}")
        return Timer(self, kind, callback)

    def _arm(self, timer: Timer, expire_ns: int) -> None:
        if timer._entry is not None:
            self._stale += 1
        entry = [expire_ns, next(self._seq), timer]
        timer._entry = entry
        heapq.heappush(self._heaps[timer.kind], entry)
        if self._stale > _STALE_SLACK and 2 * self._stale > sum(map(len, self._heaps.values())):
            self._compact()
        self._changed()

    def _compact(self) -> None:
        for heap in self._heaps.values():
            heap[:] = [e for e in heap if e[2]._entry is e]
            heapq.heapify(heap)
        self._stale = 0

    def _top(self, kind: str) -> list | None:
        return self._top_of(self._heaps[kind])

    def _top_of(self, heap: list) -> list | None:
        """The earliest armed entry of ``heap`` (stale entries on top are dropped on the way)."""
        while heap:
            entry = heap[0]
            if entry[2]._entry is entry:
                return entry
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def _next_due(self) -> tuple[float, str | None]:
        """Host ns at which the earliest armed timer fires, and its kind."""
        best, kind = _INF, None
        h = self._top(HOST)
        if h is not None:
            best, kind = h[0], HOST
        if self._vm_running:
            v = self._top(VM)
            if v is not None:
                at = self.host_ns() + (v[0] - self.vm_ns())
                if at < best:
                    best, kind = at, VM
        return best, kind

    def _fire(self, kind: str) -> None:
        entry = heapq.heappop(self._heaps[kind])
        timer = entry[2]
        timer._entry = None
        timer.callback()

    def _fire_reporting(self, kind: str) -> None:
        """Fire the next timer; one broken callback must not stop every other timer, nor time itself."""
        try:
            self._fire(kind)
        except Exception as exc:
            self._report_failure(exc)

    def _report_failure(self, exc: Exception) -> None:
        context = {"message": "balloonlab emulator timer callback failed", "exception": exc}
        if self.loop is not None:
            self.loop.call_exception_handler(context)
        else:
            log.error("balloonlab emulator timer callback failed", exc_info=exc)

    def pending_timers(self) -> int:
        """How many timers are armed (for status and tests)."""
        return sum(1 for heap in self._heaps.values() for e in heap if e[2]._entry is e)

    # -- virtual time ---------------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``, running every timer that falls due, in time order."""
        if self.mode != "virtual":
            raise VirtualClockRequiredError(
                "advance() needs the virtual clock: start the emulator with clock='virtual' "
                "(a real clock moves on its own)")
        if not seconds >= 0:
            raise ValueError(f"cannot advance by {seconds!r} seconds: give a number >= 0")
        target = self._virtual_host + round(seconds * NS)
        # _next_due() and _fire_reporting() inlined: this loop runs twice per poll, 172 800 times for a day at 1 s.
        # Within it, while the VM runs, _vm_since is kept equal to the virtual host time, so vm_ns() is _vm_base.
        host_heap, vm_heap = self._heaps[HOST], self._heaps[VM]
        top = self._top_of
        self._dispatching = True
        try:
            while True:
                h = top(host_heap) if host_heap else None
                at, heap = (h[0], host_heap) if h is not None else (_INF, None)
                if self._vm_running and vm_heap:
                    v = top(vm_heap)
                    if v is not None:
                        vm_at = self._virtual_host + (v[0] - (self._vm_base + self._virtual_host - self._vm_since))
                        if vm_at < at:
                            at, heap = vm_at, vm_heap
                if at > target or heap is None:
                    break
                at = max(int(at), self._virtual_host)
                if self._vm_running:
                    self._vm_base += at - self._vm_since
                    self._vm_since = at
                self._virtual_host = at
                entry = heapq.heappop(heap)
                timer = entry[2]
                timer._entry = None
                try:
                    timer.callback()
                except Exception as exc:
                    self._report_failure(exc)
            if self._vm_running:
                self._vm_base += target - self._vm_since
                self._vm_since = target
            self._virtual_host = target
        finally:
            self._dispatching = False

    # -- real time: one loop callback for the earliest timer --------------------------------------------------
    def _changed(self) -> None:
        if self.mode != "real" or self._dispatching or self._closed:
            return
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet: timers are scheduled once one runs and something changes
        at, _ = self._next_due()
        if at == self._handle_at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._handle_at = at
        if at != _INF:
            delay = max(0.0, (at - self.host_ns()) / NS / self.speed)
            self._handle = self.loop.call_at(self.loop.time() + delay, self._run_due)

    def _run_due(self) -> None:
        self._handle = None
        self._handle_at = _INF
        self._dispatching = True
        try:
            while not self._closed:
                at, kind = self._next_due()
                if at > self.host_ns():
                    break
                self._fire_reporting(kind)  # type: ignore[arg-type]
        finally:
            self._dispatching = False
        self._changed()

    def close(self) -> None:
        """Disarm every timer and stop scheduling (the machine is shutting down)."""
        self._closed = True
        for heap in self._heaps.values():
            for entry in heap:
                entry[2]._entry = None
            heap.clear()
        self._stale = 0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
