"""``balloonlab.connect(path, exclusive=False)``: a QMP socket shared with the VM's manager, one call at a time.

Why: QEMU serves one client per QMP socket at a time.  A second client's ``connect()`` succeeds (the kernel accepts
it into the listen backlog) but no greeting comes until the first client leaves, so whoever holds the socket locks
everyone else out.  Proxmox talks to each VM's ``/var/run/qemu-server/ID.qmp`` itself, a connection per command;
a lab that held that socket would make ``qm`` and pvestatd hang.  So this client opens the socket for each call and
closes it at once (as Proxmox does), and waits its turn (up to the command timeout) while the manager has it.

What it costs: no events (QEMU sends them only to a connected client), so BALLOON_CHANGE, STOP and RESUME are not
seen between calls; the watch and the panel poll instead of listening, and say so (``lab.exclusive``).  The default,
``exclusive=True`` (:class:`~balloonlab.client.connection.BalloonClient`), holds the connection because events are
how ``actual`` and the run state stay current for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from typing import Any, AsyncIterator

from qemu.qmp.protocol import ConnectError

from .connection import SLOWEST, BalloonClient, _QMP
from ..errors import BalloonDisconnectedError

#: True inside a session's block (in that task): its commands use the session instead of opening another.
_inside = contextvars.ContextVar("balloonlab_shared_session", default=False)


class SharedSocketClient(BalloonClient):
    """A :class:`BalloonClient` that holds its QMP socket only for the length of each call."""

    exclusive = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn: asyncio.Lock | None = None  # our own calls take turns too: QEMU would serve one anyway

    @property
    def connected(self) -> bool:
        return self._connected  # nothing is held between calls: "connected" means "not closed and not lost"

    async def connect(self, timeout: float = 5.0) -> None:
        """Read the basics in one short session, then release the socket."""
        if self._connected:
            return
        self._closing = False
        self._turn = asyncio.Lock()
        self._wake = asyncio.Event()
        self._connected = True
        self.disconnect_reason = None
        try:
            async with self._session(timeout):
                await self._read_basics()
        except BaseException:
            self._connected = False
            raise
        self._update_follower()

    @contextlib.asynccontextmanager
    async def _session(self, timeout: float) -> AsyncIterator[None]:
        """Hold the socket for the block: connect (waiting for the greeting while another client has it), close.

        Waiting for our own previous call (the follower's read) counts against the same ``timeout``, so a busy
        socket is reported as such before the lab's own deadline passes.  The lock is kept in a local: a
        ``disconnect()`` or ``reconnect()`` meanwhile replaces ``self._turn``, and the session must release the
        lock it took, not whichever is current."""
        turn = self._turn
        if turn is None:
            raise BalloonDisconnectedError(self.disconnected_message())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await _take(turn, timeout):
            raise self._refused(asyncio.TimeoutError(), timeout)
        try:
            qmp = _QMP(self._on_event)
            try:
                await asyncio.wait_for(qmp.connect(self.socket_path), max(0.01, deadline - loop.time()))
            except (ConnectError, OSError, EOFError, asyncio.TimeoutError) as exc:
                await self._discard(qmp)
                raise self._refused(exc, timeout) from None
            previous, self._qmp = self._qmp, qmp
            token = _inside.set(True)
            try:
                yield
            finally:
                _inside.reset(token)
                if self._qmp is qmp:
                    self._qmp = previous
                await self._discard(qmp)
        finally:
            turn.release()

    def _refused(self, exc: BaseException, timeout: float) -> BalloonDisconnectedError:
        if not os.path.exists(self.socket_path):
            self._connected = False
            self.disconnect_reason = "the socket is gone"
            return BalloonDisconnectedError(
                f"the QMP socket {self.socket_path} is gone (QEMU exited?); lab.reconnect() once it is back")
        if isinstance(exc, asyncio.TimeoutError):
            return BalloonDisconnectedError(
                f"no QMP greeting from {self.socket_path} within {timeout:g} s: another client (the VM's manager?) "
                "holds the socket; QEMU serves one client at a time. Try again, or raise timeout=")
        cause = getattr(exc, "exc", None) or exc
        return BalloonDisconnectedError(f"cannot connect to the QMP socket {self.socket_path}: {cause}")

    async def execute(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> Any:
        if not self._connected or self._turn is None:
            raise BalloonDisconnectedError(self.disconnected_message())
        timeout = self.command_timeout if timeout is None else timeout
        if _inside.get():
            return await super().execute(command, arguments, timeout)  # inside connect()'s session
        async with self._session(timeout):
            return await super().execute(command, arguments, timeout)

    def _stats_period(self) -> float:
        """Each read is a connection of its own: never faster than QEMU refreshes the stats, nor than every 2 s."""
        return max(SLOWEST, float(self.interval or 0))

    async def reconnect(self, timeout: float = 5.0) -> None:
        """Nothing is held between calls: reconnecting is reading the basics again in one short session.  Until
        that session has read them the lab stays as it was, so a failed attempt costs a working lab nothing."""
        if not self._connected:
            await self.connect(timeout)
            return
        async with self._session(timeout):
            await self._read_basics()
        self._update_follower()

    async def disconnect(self, notify: str | None = None) -> None:
        await super().disconnect(notify)
        self._turn = None


async def _take(lock: asyncio.Lock, timeout: float) -> bool:
    """Acquire ``lock`` within ``timeout`` s; False when the time ran out (then it is not held).

    Why not ``wait_for(lock.acquire(), timeout)``: on Python 3.10 and 3.11 a timeout that races the grant can leave
    the lock taken by a caller that was told it timed out, and no one ever releases it.  Here the acquisition is a
    task of its own; one abandoned (timed out, or its waiter cancelled) gives the lock back if it got it."""
    acquiring = asyncio.ensure_future(lock.acquire())
    try:
        done, _ = await asyncio.wait({acquiring}, timeout=timeout)
    except BaseException:
        _abandon(lock, acquiring)
        raise
    if acquiring in done:
        return True
    _abandon(lock, acquiring)
    return False


def _abandon(lock: asyncio.Lock, acquiring: asyncio.Future) -> None:
    acquiring.cancel()  # no effect once it has the lock: the callback below gives that back
    acquiring.add_done_callback(lambda task: None if task.cancelled() or task.exception() else lock.release())


__all__ = ["SharedSocketClient"]
