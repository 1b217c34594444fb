"""The one background thread of a live view (a panel, a ``%balloon watch``): takes lab updates and user requests
off the threads that deliver them.

Lab updates arrive on the lab's asyncio thread, whose callbacks must never block (that loop carries every lab's
QMP traffic and the in-process emulators, and ipykernel's ``publish`` may wait seconds on its IO thread), and
slider moves arrive in a comm handler, which must stay short (JupyterLab may run it on a kernel subshell).  Both
only hand work to an :class:`UpdatePump`: ``put`` queues an update and ``submit`` queues a request, each O(1).  The
pump's thread applies queued updates in batches, at most one batch per ``min_gap`` seconds (a burst of reports costs one
render), runs requests as soon as they come (they may talk QMP, which is why they run here), and calls ``tick``
about once per ``tick_every`` seconds while idle (for ages such as "3 s ago").
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger("balloonlab")


class UpdatePump:
    """A daemon thread that batches updates, runs requests, and ticks; stopped by :meth:`stop`."""

    def __init__(
        self,
        apply: Callable[[list[Any]], None],
        *,
        tick: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        min_gap: float = 0.1,
        tick_every: float = 1.0,
        max_pending: int = 8192,
        name: str = "balloonlab-pump",
        start: bool = True,
    ) -> None:
        self._apply = apply
        self._tick = tick
        self._on_error = on_error
        self.min_gap = min_gap
        self.tick_every = tick_every
        # Bounded: a stalled front end or a burst of 2 h of virtual time cannot grow memory without limit; the
        # views are bounded windows anyway, so the oldest updates are the ones nobody would see.
        self._items: deque[Any] = deque(maxlen=max_pending)
        self._actions: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = False
        self._last_flush = 0.0
        self.batches = 0  #: batches of updates applied
        self.items = 0  #: updates applied
        self.cpu_seconds = 0.0  #: CPU time this thread spent applying updates (``time.thread_time``)
        self.ticks = 0  #: ticks run
        self.tick_cpu_seconds = 0.0  #: CPU time spent in ticks
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the thread (when made with ``start=False``: queue first, apply later)."""
        if not self._thread.is_alive() and not self._stopping:
            self._thread.start()

    # -- any thread --------------------------------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """Queue an update (cheap, never blocks for long: safe on the lab's event-loop thread)."""
        with self._cond:
            if self._stopping:  # a callback already on its way when the view closed
                return
            self._items.append(item)
            self._cond.notify()

    def submit(self, action: Callable[[], None]) -> None:
        """Run ``action()`` on the pump's thread soon (before the next batch of updates)."""
        with self._cond:
            if not self._stopping:
                self._actions.append(action)
                self._cond.notify()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far has been applied; False on timeout.  For tests and scripts."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return not (self._items or self._actions)
        with self._cond:
            return self._cond.wait_for(
                lambda: self._stopping or not (self._items or self._actions or self._busy), timeout
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (drops what is still queued) and wait for it, unless called from the thread itself."""
        with self._cond:
            self._stopping = True
            self._items.clear()
            self._actions.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the pump's thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_every
        while True:
            with self._cond:
                while not (self._stopping or self._items or self._actions):
                    if self._tick is None:  # nothing to tick: sleep until there is work
                        self._cond.wait()
                        continue
                    remaining = next_tick - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopping:
                    return
                if self._items and not self._actions:
                    # Throttle: at most one batch per min_gap; a stop request still wakes us at once.
                    delay = self._last_flush + self.min_gap - time.monotonic()
                    if delay > 0 and self._cond.wait_for(lambda: self._stopping or bool(self._actions), delay):
                        if self._stopping:
                            return
                actions = list(self._actions)
                self._actions.clear()
                items = list(self._items)
                self._items.clear()
                self._busy = True
            try:
                for action in actions:
                    self._guard(action)
                if items:
                    started = time.thread_time()
                    self._guard(functools.partial(self._apply, items))
                    self.cpu_seconds += time.thread_time() - started
                    self.batches += 1
                    self.items += len(items)
                now = time.monotonic()
                if self._tick is not None and now >= next_tick:
                    started = time.thread_time()
                    self._guard(self._tick)
                    self.tick_cpu_seconds += time.thread_time() - started
                    self.ticks += 1
                    next_tick = now + self.tick_every
            finally:
                with self._cond:
                    self._busy = False
                    self._last_flush = time.monotonic()
                    self._cond.notify_all()

    def _guard(self, fn: Callable[[], None]) -> None:
        # Nothing may kill the thread: a view that stops updating silently is worse than one that says why.
        try:
            fn()
        except Exception as exc:
            log.exception("balloonlab: a live view update failed")
            if self._on_error is not None:
                try:
                    self._on_error(exc)
                except Exception:
                    log.exception("balloonlab: a live view's error handler failed")
