"""Background asyncio tasks that are never lost: held until they end, their failures logged.

Shared by the client's loop (``client/loop.py``) and the emulator's QMP server (``emulator/qmp_server.py``), which
both start fire-and-forget tasks.  The event loop keeps only weak references to tasks, so such a task could be
collected half-way, and an exception nobody retrieves would only be reported when it is garbage-collected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Awaitable

log = logging.getLogger("balloonlab")

_running: set[asyncio.Future] = set()  # spawn()'s tasks until they end


def spawn(awaitable: Awaitable[Any], name: str) -> asyncio.Task:
    """Create a task on the current (background) loop whose failure is logged, never left unretrieved.

    The task is held here until it ends: the loop keeps only weak references to tasks, so a fire-and-forget
    task (stopping a host from its finalizer) could otherwise be collected half-way.
    """
    task = asyncio.ensure_future(awaitable)
    task.set_name(name)
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(_retrieve)
    return task


def _retrieve(task: asyncio.Future | concurrent.futures.Future) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("balloonlab task %s failed: %r", getattr(task, "get_name", lambda: "?")(), exc, exc_info=exc)


__all__ = ["spawn"]
