"""Names from QEMU's QAPI schema that more than one layer uses.

The emulator produces them, the client reads them back from ``query-status`` and events, and the doctor and the
panel explain them.  The values are QEMU's own spelling (``qapi/run-state.json``'s ``RunState``), so a live QEMU's
answer fits the same type as the emulator's.
"""

from __future__ import annotations

from typing import Literal, get_args

#: ``query-status``'s ``status``: what the VM is doing.  The emulator uses prelaunch (``-S``), running, paused
#: (``stop``) and shutdown; a live QEMU may report any of them.
RunState = Literal["debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate", "prelaunch",
                   "finish-migrate", "restore-vm", "running", "save-vm", "shutdown", "suspended", "watchdog",
                   "guest-panicked", "colo"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)

__all__ = ["RUN_STATES", "RunState"]
