"""The emulator as one object: a Clock, a Machine and a QMP server on a unix socket, started and stopped together.

The socket is private by default: a fresh directory (mode 0700) holding ``qmp.sock`` (mode 0600), both removed
by :meth:`Emulator.stop`.  A caller-chosen path still gets mode 0600; a stale socket left there by a crashed
run is replaced (as QEMU does), but a socket something still answers on, or any other file, is refused.  The
socket is chmod-ed before ``listen()``, so no client can connect while it is still group/world accessible.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile

from ..errors import EmulatorOptionError
from .clock import Clock
from .config import MachineConfig
from .machine import Machine
from .qmp_server import QMPServer

SOCKET_NAME = "qmp.sock"


def _refuse_busy_path(path: str) -> None:
    """Make ``path`` free for a new socket, or raise if it holds something we must not replace."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EmulatorOptionError(f"{path} exists and is not a socket; choose another QMP socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # stale: nobody listens there any more
        return
    finally:
        probe.close()
    raise EmulatorOptionError(f"{path} is in use by another QMP server; choose another QMP socket path")


def bind_private_socket(path: str) -> socket.socket:
    """A listening unix socket at ``path`` with mode 0600, set before anyone can connect."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        if exc.errno in (errno.ENAMETOOLONG, None) or "too long" in str(exc):
            raise EmulatorOptionError(f"QMP socket path too long for a unix socket ({len(path)} bytes): "
                                      f"{path}") from None
        raise EmulatorOptionError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return sock


class Emulator:
    """An emulated QEMU serving QMP (docs/emulator.md).  ``start``/``stop`` run on the asyncio loop that owns it."""

    def __init__(self, config: MachineConfig, socket_path: str | None = None, clock: Clock | None = None) -> None:
        """``clock``: a clock made by the caller (a host of many VMs starts each VM's clock at the host's time and
        epoch, emulator/host.py); None makes one of ``config.clock`` on the running loop."""
        self.config = config
        self._given_clock = clock
        self._requested_path = socket_path
        self.socket_path: str = socket_path or ""
        self.machine: Machine | None = None
        self.clock: Clock | None = None
        self._server: QMPServer | None = None
        self._private_dir: str | None = None
        self._socket_inode: int | None = None
        self._closed = asyncio.Event()
        self._stopping: asyncio.Task | None = None

    @property
    def server(self) -> QMPServer | None:
        return self._server

    async def start(self) -> None:
        """Build the VM, listen on the socket, power the VM on."""
        if self._server is not None:
            raise RuntimeError("this Emulator was already started")
        loop = asyncio.get_running_loop()
        self.clock = self._given_clock or Clock(self.config.clock, loop, start_epoch=self.config.start_epoch,
                                                speed=self.config.speed)
        self.machine = Machine(self.config, self.clock)  # config errors surface before any file exists
        if self._requested_path is None:
            self._private_dir = tempfile.mkdtemp(prefix="balloonlab-")  # mode 0700
            self.socket_path = os.path.join(self._private_dir, SOCKET_NAME)
        else:
            self.socket_path = os.path.abspath(self._requested_path)
            _refuse_busy_path(self.socket_path)
        try:
            sock = bind_private_socket(self.socket_path)
            self._socket_inode = os.stat(self.socket_path).st_ino
            self._server = QMPServer(self.machine, single_client=self.config.single_client)
            self.machine.on_quit = self._on_quit
            await self._server.start(sock)
        except BaseException:
            self._remove_files()
            self.machine.shutdown()
            raise
        try:
            self.machine.start()
        except BaseException:
            await self.stop()
            raise

    def _on_quit(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())

    async def stop(self) -> None:
        """Disconnect every client (after it got what was queued for it), stop the VM, remove the socket."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        try:
            if self._server is not None:
                await self._server.close()
            if self.machine is not None:
                self.machine.shutdown()
        finally:
            self._remove_files()
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the emulator stopped (``quit`` from a client, or stop())."""
        await self._closed.wait()

    def _remove_files(self) -> None:
        with contextlib.suppress(OSError):
            if self._socket_inode is not None and os.stat(self.socket_path).st_ino == self._socket_inode:
                os.unlink(self.socket_path)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
