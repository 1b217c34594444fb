"""One private asyncio loop on a daemon thread, shared by every lab in the process.

Why: a Jupyter kernel already runs an asyncio loop, so nothing in balloonlab may call ``run_until_complete`` or
block that loop for long.  All QMP I/O (``qemu.qmp.QMPClient``) and every in-process emulator live on this one
background loop; synchronous callers (the ``Balloon`` facade, magics, widget comm handlers on any thread) submit
coroutines with :func:`run` and wait with a timeout.  One loop for all labs keeps a fleet of labs cheap: no
thread per lab, no timer per lab unless someone watches.

Exceptions that escape into the loop (a callback that raised, a task whose error nobody retrieved) are a bug in
balloonlab: the loop's exception handler logs them and keeps them in :func:`loop_errors` so tests can assert that
the list stays empty.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from ..tasks import _retrieve, spawn  # spawn: the same task keeper the emulator uses (balloonlab/tasks.py)

log = logging.getLogger("balloonlab")
log.addHandler(logging.NullHandler())

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_errors: collections.deque[dict] = collections.deque(maxlen=100)


def _handle_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    _errors.append(context)
    log.error("balloonlab background loop: %s", context.get("message"), exc_info=context.get("exception"))


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use (a daemon thread named ``balloonlab-loop``)."""
    global _loop, _thread
    with _lock:
        if _loop is not None and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_handle_exception)
        ready = threading.Event()
        thread = threading.Thread(target=_serve, args=(loop, ready), name="balloonlab-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread = loop, thread
        return loop


def in_loop_thread() -> bool:
    """True when called on the background loop's own thread (where blocking on the loop would deadlock)."""
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop; returns a thread-safe future."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None, *,
        undo: Callable[[T], Awaitable[Any]] | None = None) -> T:
    """Run ``coro`` on the background loop and wait for its result from any other thread.

    On timeout the coroutine is cancelled and :class:`TimeoutError` is raised.  Calling this from the loop thread
    itself (for example from inside a ``lab.subscribe`` callback) would deadlock, so it raises ``RuntimeError``.

    Unlike :func:`submit` (``asyncio.run_coroutine_threadsafe``), the result reaches the waiting thread from the
    coroutine's last step, not from a done-callback one loop iteration later, and through a plain lock: every
    synchronous lab call pays this hop, so it is kept as short as the loop allows (docs/benchmarks.md,
    ``thread_handoff_us``).

    ``undo``: for a coroutine that starts something (an emulator, a host's VM) and returns it.  When the caller
    has given up, what finished anyway (the start was past its last await, or it outlived the cancellation) is
    handed to ``undo`` on the loop, so nothing started late is left running with nobody to stop it.
    """
    if in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a synchronous balloonlab call was made on balloonlab's own background thread (inside a subscribe "
            "callback?): callbacks must be short and must not call lab methods; hand the work to another thread"
        )
    call = _Call(coro)
    loop = get_loop()
    loop.call_soon_threadsafe(call.start, loop)
    try:
        finished = call.done.acquire(timeout=-1 if timeout is None else timeout)
    except BaseException:  # Ctrl-C in the caller: do not leave the work running on the shared loop
        loop.call_soon_threadsafe(call.abandon, undo)
        raise
    if not finished:
        loop.call_soon_threadsafe(call.abandon, undo)
        raise _NoAnswer(f"no answer within {timeout} s")
    if call.error is not None:
        raise call.error
    return call.result


def run_bounded(coro: Coroutine[Any, Any, T], timeout: float | None, timeout_message: str, *,
                undo: Callable[[T], Awaitable[Any]] | None = None) -> T:
    """:func:`run` for balloonlab's own calls: the caller's timeout is raised as
    :class:`~balloonlab.errors.BalloonDisconnectedError` with ``timeout_message`` (what did not answer, what to
    do), never as a bare ``TimeoutError``.  ``undo``: as for :func:`run`.
    """
    from ..errors import BalloonDisconnectedError

    try:
        return run(coro, timeout, undo=undo)
    except _NoAnswer:
        raise BalloonDisconnectedError(timeout_message) from None


def run_to_end(coro: Coroutine[Any, Any, Any], timeout: float | None) -> None:
    """Work that must finish once begun, whoever waits (stopping what balloonlab started): the caller waits up to
    ``timeout`` (then TimeoutError), the work is never cancelled and its failure is logged."""
    future = submit(coro)
    try:
        future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.add_done_callback(_retrieve)  # nobody waits for it any more: its failure is logged
        raise _NoAnswer(f"not finished within {timeout} s; it goes on in the background") from None


class _NoAnswer(TimeoutError):
    """:func:`run`'s own timeout (not a TimeoutError the coroutine raised)."""


class _Call:
    """One :func:`run`: the coroutine, its task on the loop, and a lock the caller blocks on until the result
    is in (lighter than a ``concurrent.futures.Future``, whose condition variable costs more on both sides)."""

    __slots__ = ("coro", "task", "done", "result", "error")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.task: asyncio.Task | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released once, by _settle()
        self.result: Any = None
        self.error: BaseException | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.task = loop.create_task(self._settle())

    async def _settle(self) -> None:
        try:
            self.result = await self.coro
        except BaseException as exc:  # the caller gets it (a cancellation included)
            self.error = exc
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.done.release()

    def abandon(self, undo: Callable[[Any], Awaitable[Any]] | None) -> None:
        """On the loop, after start() (both are queued in order): the caller gave up; stop the work, and once the
        task settles, ``undo`` what it returned if it returned at all."""
        task = self.task
        if task is None:
            return
        task.cancel()

        def settled(done: asyncio.Task) -> None:
            if done.cancelled():  # before its first step: the coroutine never ran (close it, nothing to undo)
                self.coro.close()
            elif self.error is None and undo is not None:
                spawn(undo(self.result), "balloonlab-undo-late-start")

        task.add_done_callback(settled)


def call_soon(fn: Callable[..., Any], *args: Any) -> None:
    """Run a plain callable on the background loop (thread-safe)."""
    get_loop().call_soon_threadsafe(fn, *args)


def loop_errors() -> list[dict]:
    """Contexts the background loop's exception handler saw (should stay empty; tests check it)."""
    return list(_errors)


__all__ = ["get_loop", "in_loop_thread", "submit", "run", "run_bounded", "run_to_end", "call_soon", "spawn",
           "loop_errors"]
