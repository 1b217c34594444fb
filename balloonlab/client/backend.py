"""What the ``Balloon`` facade needs from the thing that reaches one VM's balloon: one small interface.

Three implementations: :class:`~balloonlab.client.connection.BalloonClient` (one held QMP connection: QEMU, the
emulator), :class:`~balloonlab.client.shared.SharedSocketClient` (a QMP connection per call, for sockets a manager
such as Proxmox also uses) and :class:`~balloonlab.client.libvirt_client.LibvirtClient` (libvirt's API).  The facade
(``client/balloon.py``) is written against this protocol only, so a new way in is a new class here, not a branch
in every method of the facade.  Every coroutine runs on balloonlab's background loop (``client/loop.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from .connection import ExchangeTap
from .history import History
from .updates import LabUpdate
from ..stats import GuestStats


class BalloonBackend(Protocol):
    """One VM's balloon device, reached somehow.  Attributes are the last values seen; coroutines ask again."""

    socket_path: str  #: the QMP unix socket, or "" when another program (libvirt) holds it
    device_path: str | None  #: the balloon's QOM path
    devices: list[str]
    qemu_version: str | None
    commands: frozenset[str]  #: QMP commands known to exist (empty when they cannot be listed without side effects)
    ram_size: int | None
    target: int | None
    last_stats: GuestStats | None
    history: History
    _refresh_meta: bool  #: set by the facade after a command that may change run state, interval or actual

    @property
    def address(self) -> str: ...  # where, for messages: the socket path, or the domain and URI
    @property
    def connected(self) -> bool: ...
    @property
    def following(self) -> bool: ...
    @property
    def wants_replay(self) -> bool: ...

    async def connect(self, timeout: float = 5.0) -> None: ...
    async def disconnect(self, notify: str | None = None) -> None: ...
    async def execute(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> Any: ...
    async def read_stats(self) -> GuestStats: ...
    async def read_interval(self) -> int: ...
    async def set_interval(self, value: Any) -> None: ...
    async def read_actual(self) -> int | None: ...
    async def set_target(self, size: int) -> None: ...
    async def read_run_state(self) -> dict: ...
    async def read_host_rss(self) -> int: ...
    async def begin_replay(self) -> tuple[int, float]: ...
    async def advance_replaying(self, seconds: float, cursor: int) -> int: ...
    def end_replay(self) -> None: ...
    def events_snapshot(self) -> list[dict]: ...
    def subscribe(self, callback: Callable[[LabUpdate], None]) -> Callable[[], None]: ...
    def add_tap(self, tap: ExchangeTap) -> Callable[[], None]: ...  # a recorder sees every exchange and event
    def take_notice(self) -> str | None: ...  # something to tell the user once, on the caller's thread
    def _poke(self) -> None: ...  # wake the follower now


__all__ = ["BalloonBackend"]
