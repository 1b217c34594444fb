"""The libvirt backend: one libvirt domain's balloon, driven through libvirt's own API.

libvirt owns the QMP socket of every VM it runs, so balloonlab asks libvirt instead of QEMU: ``memoryStats()``
for the stats (and the host side, ``rss``), the live domain XML's ``<memballoon><stats period=.../>`` for the
polling interval, ``setMemoryStatsPeriod`` and ``setMemoryFlags`` to change it and the target, and libvirt's
BALLOON_CHANGE and lifecycle events.  Raw QMP (``lab.qmp``, ``%%qmp``) goes through libvirt's monitor passthrough
(``libvirt_qemu.qemuMonitorCommand``), which libvirt allows but marks the domain as *tainted* ("custom-monitor"),
so the lab says so once.

Everything above the transport is shared with the QMP client: :class:`LibvirtClient` is a
:class:`~balloonlab.client.connection.BalloonClient` whose reads and writes go to libvirt, so history,
subscribers, the follower and the event record behave exactly as on QEMU.  libvirt's names and units are mapped
back to QEMU's (``unused`` is free-memory, ``available`` total-memory, ``usable`` available-memory; KiB to bytes;
see ``balloonlab/stats.py``), so a libvirt lab's ``stats()`` has the same ``GuestStats`` keys as a QMP lab's.
"""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from typing import Any

from . import loop as _loop
from .connection import BalloonClient
from .libvirt_host import DOMAIN_GONE, LibvirtHost, require_libvirt
from .updates import LabUpdate
from ..errors import BalloonDisconnectedError, InvalidValueError, NoBalloonDeviceError, QMPError
from ..qapi import RunState
from ..stats import STATS, UNSET

#: libvirt's dommemstat fields that are QEMU byte values shown in KiB (the rest are counts or times).
_KIB_FIELDS = frozenset(s.libvirt for s in STATS if s.unit == "bytes") | {"actual", "rss"}
#: The stats libvirt 9.0 maps (tags 0-9): always present in a libvirt lab's GuestStats, None when unset.
_BASE_STATS = tuple(s for s in STATS if s.since <= (3, 0))

TAINT_NOTICE = ("lab.qmp() on a libvirt lab goes through libvirt's monitor passthrough (qemuMonitorCommand): "
                "libvirt now marks domain {name!r} as tainted (custom-monitor) in its log, and libvirt does not "
                "know what such commands change. Prefer the lab's own methods, which use libvirt's API.")


def stats_from_libvirt(memory_stats: dict[str, int]) -> dict:
    """A ``guest-stats``-shaped answer (QMP keys, bytes, unset as QEMU's UNSET) from ``dom.memoryStats()``."""
    stats: dict[str, int] = {}
    for info in STATS:
        if info.libvirt in memory_stats:
            value = int(memory_stats[info.libvirt])
            stats[info.qmp_key] = value * 1024 if info.libvirt in _KIB_FIELDS else value
        elif info in _BASE_STATS:
            stats[info.qmp_key] = UNSET
    return {"stats": stats, "last-update": int(memory_stats.get("last_update", 0))}


def _wire_event(name: str, data: dict | None = None) -> dict:
    now = time.time()
    event: dict[str, Any] = {"timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)}, "event": name}
    if data is not None:
        event["data"] = data
    return event


class LibvirtClient(BalloonClient):
    """One libvirt domain's balloon.  Runs on balloonlab's loop; every libvirt call runs on the host's threads."""

    def __init__(self, host: LibvirtHost, domain: str, *, owns_host: bool, command_timeout: float = 10.0) -> None:
        # libvirt holds the domain's QMP socket: there is none to give to anyone (socket_path is "").
        super().__init__("", None, command_timeout=command_timeout)
        self.host = host
        self.domain_name = domain
        self.owns_host = owns_host
        self.host_rss: int | None = None
        self._dom: Any = None
        self._stop_listening: Any = None
        self._tainted = False
        self._taint_told = False

    @property
    def address(self) -> str:
        return f"domain {self.domain_name!r} on {self.host.uri}"

    @property
    def connected(self) -> bool:
        return self._connected and self._dom is not None and self.host.alive

    def disconnected_message(self) -> str:
        return (f"lost libvirt's {self.address} ({self.disconnect_reason or 'not connected'}). Call "
                "lab.reconnect() once libvirtd and the domain are back.")

    # Connection ------------------------------------------------------------------------------------------------
    async def connect(self, timeout: float = 5.0) -> None:
        """Look the domain up, check it runs and has a balloon, read the basics, listen to its events."""
        if self.connected:
            return
        self._closing = False
        if not self.host.alive:
            await asyncio.get_running_loop().run_in_executor(None, self.host.reopen)
        await self._attach()

    async def reconnect(self, timeout: float = 5.0) -> None:
        """Look the domain up again, on a new libvirt connection where the old one is gone (libvirtd restarted).

        A lab that works keeps working when the look-up fails: the domain is found and checked first, and only
        then replaces the one the lab had (the README's promise for every backend)."""
        if not self.connected:
            await self.disconnect()
            await self.connect(timeout)
            return
        await self._attach()

    async def _attach(self) -> None:
        """Find the domain, check it, and only then make it the lab's (its events replacing the old ones')."""
        libvirt = require_libvirt()
        dom = await self._call(self._lookup)
        state, _reason = await self._call(dom.state)
        if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_BLOCKED):
            raise BalloonDisconnectedError(
                f"{self.address} is not running (state {state}); start it (virsh start {self.domain_name}) and call "
                "lab.reconnect()")
        xml = ET.fromstring(await self._call(dom.XMLDesc, 0))
        balloon = xml.find("./devices/memballoon")
        if balloon is None or balloon.get("model") in (None, "none"):
            raise NoBalloonDeviceError(
                f"{self.address} has no balloon device. Add <memballoon model='virtio'><stats period='2'/>"
                "</memballoon> to its <devices> (virsh edit) and restart it.")
        alias_element = balloon.find("alias")
        alias = (alias_element.get("name") if alias_element is not None else None) or "balloon0"
        version = await self._call(self.host.conn.getVersion)
        ram_size = int(await self._call(dom.maxMemory)) * 1024
        uuid = await self._call(dom.UUIDString)
        # Everything checked: from here the lab is this domain's.
        # libvirt's -device id is the alias: QEMU has the balloon where a QMP lab would find it.
        self.device_path = f"/machine/peripheral/{alias}"
        self.devices = [self.device_path]
        self.qemu_version = f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"
        self.ram_size = ram_size
        self._dom = dom
        self._observe_interval(self._period(xml))
        self._connected = True
        self._closing = False
        self.disconnect_reason = None
        if self._wake is None:
            self._wake = asyncio.Event()
        stop_old, self._stop_listening = self._stop_listening, self.host.listen(
            uuid, lambda kind, data: _loop.call_soon(self._on_libvirt, kind, data))
        if stop_old is not None:
            stop_old()
        try:
            await self.read_run_state()
            await self.read_actual()
        except BaseException:
            await self.disconnect()
            raise
        self._refresh_meta = False
        self._update_follower()

    def _lookup(self) -> Any:
        libvirt = require_libvirt()
        conn = self.host.conn
        try:
            return conn.lookupByName(self.domain_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        try:
            return conn.lookupByUUIDString(self.domain_name)
        except libvirt.libvirtError:
            raise BalloonDisconnectedError(
                f"no domain {self.domain_name!r} on {self.host.uri}; its running domains: "
                f"{', '.join(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)) or 'none'}"
            ) from None

    async def disconnect(self, notify: str | None = None) -> None:
        was_connected = self._connected
        self._closing = True
        self._connected = False
        self._poke()
        stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            stop()
        task, self._follow_task = self._follow_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self._dom = None
        if self.owns_host:  # the lab's own connection: closed with it, opened again by reconnect()
            await asyncio.get_running_loop().run_in_executor(None, self.host.disconnect)
        if notify and was_connected:
            self.disconnect_reason = notify
            self._notify(LabUpdate("disconnected", error=notify))

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await self.host.call(fn, *args, domain=self.domain_name, timeout=self.command_timeout)
        except BalloonDisconnectedError as exc:
            if not self.host.alive or DOMAIN_GONE in str(exc):
                self._lost(str(exc))  # no event may come (a remote host went quiet): say so from here too
            raise

    def _domain(self) -> Any:
        if self._dom is None or not self._connected:
            raise BalloonDisconnectedError(self.disconnected_message())
        return self._dom

    def _lost(self, why: str) -> None:
        """The domain or the connection went away (an event said so): tell subscribers once."""
        if not self._connected or self._closing:
            return
        self._connected = False
        self.disconnect_reason = why
        self._poke()
        self._notify(LabUpdate("disconnected", error=self.disconnected_message()))

    # Reads and writes through libvirt's API --------------------------------------------------------------------
    async def read_stats(self) -> Any:
        raw = await self._call(self._domain().memoryStats)
        if "rss" in raw:
            self.host_rss = int(raw["rss"]) * 1024
        if "actual" in raw:
            self._observe_actual(int(raw["actual"]) * 1024)
        return self._observe_stats(stats_from_libvirt(raw))

    async def read_host_rss(self) -> int:
        """libvirt's ``rss`` (the QEMU process's resident memory, KiB) in bytes."""
        raw = await self._call(self._domain().memoryStats)
        if "rss" not in raw:
            raise NoBalloonDeviceError(f"libvirt reports no rss for {self.address}")
        self.host_rss = int(raw["rss"]) * 1024
        return self.host_rss

    @staticmethod
    def _period(xml: ET.Element) -> int:
        stats = xml.find("./devices/memballoon/stats")
        return int(stats.get("period", "0")) if stats is not None else 0

    async def read_interval(self) -> int:
        """The period in libvirt's live XML: what libvirt set.  (A period set behind libvirt's back with raw QMP
        is not seen here; libvirt does not re-read it from QEMU.)"""
        xml = ET.fromstring(await self._call(self._domain().XMLDesc, 0))
        value = self._period(xml)
        self._observe_interval(value)
        return value

    async def set_interval(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValueError(f"the polling interval is a whole number of seconds, not {value!r}")
        libvirt = require_libvirt()
        await self._call(self._domain().setMemoryStatsPeriod, value, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        await self.read_interval()
        self._poke()

    async def read_actual(self) -> int | None:
        info = await self._call(self._domain().info)
        value = int(info[2]) * 1024  # current memory, KiB: what query-balloon calls actual
        self._observe_actual(value)
        return value

    async def set_target(self, size: int) -> None:
        if size <= 0:
            raise InvalidValueError(f"a balloon target must be positive, not {size}")
        libvirt = require_libvirt()
        await self._call(self._domain().setMemoryFlags, -(-size // 1024), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        self._observe_target(size)
        self._poke()

    async def read_run_state(self) -> dict:
        libvirt = require_libvirt()
        state, _reason = await self._call(self._domain().state)
        states: dict[int, RunState] = {
            libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
            libvirt.VIR_DOMAIN_CRASHED: "guest-panicked", libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended"}
        status = states.get(state, "shutdown")  # SHUTOFF: QEMU is gone
        self.run_state, self.running = status, status == "running"
        return {"status": status, "running": self.running, "singlestep": False}

    async def execute(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> Any:
        """Raw QMP through libvirt's monitor passthrough; QEMU's error replies as :class:`QMPError`."""
        import libvirt_qemu

        dom = self._domain()
        message = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
        reply = json.loads(await self.host.call(libvirt_qemu.qemuMonitorCommand, dom, message, 0,
                                                domain=self.domain_name, timeout=timeout or self.command_timeout))
        self._tainted = True
        if "error" in reply:
            raise QMPError(reply["error"].get("class", "GenericError"), reply["error"].get("desc", ""), command)
        if command == "balloon" and isinstance((arguments or {}).get("value"), int):
            self._observe_target(arguments["value"])  # type: ignore[index]
        return reply.get("return")

    def take_notice(self) -> str | None:
        """What the lab should tell its user once (on the caller's thread): that passthrough taints the domain."""
        if self._tainted and not self._taint_told:
            self._taint_told = True
            return TAINT_NOTICE.format(name=self.domain_name)
        return None

    # Events from libvirt's event thread, posted to balloonlab's loop ------------------------------------------
    def _on_libvirt(self, kind: str, data: Any) -> None:
        libvirt = require_libvirt()
        if kind == "balloon":
            self._on_event(_wire_event("BALLOON_CHANGE", {"actual": int(data) * 1024}))
        elif kind == "closed":
            self._lost(f"libvirt connection closed: {data}")
        elif kind == "lifecycle":
            event, _detail = data
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                self._on_event(_wire_event("STOP"))
            elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                self._on_event(_wire_event("RESUME"))
            elif event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
                           libvirt.VIR_DOMAIN_EVENT_CRASHED):
                # No QMP event says this (QEMU is gone): libvirt's own, named so nobody mistakes it for QEMU's.
                self._on_event(_wire_event("LIBVIRT_DOMAIN_STOPPED", {"event": event, "detail": _detail}))
                self._lost("the domain stopped or was undefined")


__all__ = ["LibvirtClient", "TAINT_NOTICE", "stats_from_libvirt"]
