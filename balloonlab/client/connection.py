"""The async balloon client: one QMP connection (``qemu.qmp.QMPClient``) to one VM's balloon device.

It runs on balloonlab's background loop (``client/loop.py``); the synchronous
:class:`~balloonlab.client.balloon.Balloon` facade drives it.  It does the things every front end needs and none of
them should repeat:

* discovery: the balloon under ``/machine/peripheral`` or ``/machine/peripheral-anon`` (``child<virtio-balloon...>``
  with a ``guest-stats-polling-interval`` property);
* commands, with QEMU's error replies turned into :class:`~balloonlab.errors.QMPError` (class and desc verbatim) and
  a lost connection into :class:`~balloonlab.errors.BalloonDisconnectedError` (never a hang: the reader sees EOF at
  once, and every command has a timeout);
* events: every QMP event goes to a bounded ``events`` record and to subscribers; BALLOON_CHANGE updates ``actual``
  for free, STOP/RESUME/RESET update the run state;
* the follower: a task that exists only while somebody subscribes or history records.  It reads ``guest-stats``
  at up to 2 Hz (slower when polling is off or the VM is paused), the interval every 2 s (another client may have
  changed it), and tells subscribers only what changed.  With nobody following, a lab costs nothing but an idle
  socket, so a hundred labs in one process are cheap.
* virtual-clock replay: polling sees only the state after an advance, so while someone watches (or history
  records, the default), the lab advances an emulator in chunks and feeds every report of each chunk from
  ``x-balloonlab-reports`` (with its own time) to history and subscribers, as if it had been watched live.

``qemu.qmp``'s default event listener keeps every event forever (and queues them for a reader that does not
exist here); this client dispatches events itself instead, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import errno
import logging
import sys
import threading
import time
from array import array
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from qemu.qmp import QMPClient
from qemu.qmp.protocol import ConnectError, Runstate, StateError
from qemu.qmp.qmp_client import ExecInterruptedError, ExecuteError

from . import loop as _loop
from ..errors import BalloonDisconnectedError, NoBalloonDeviceError, QMPError, UnsupportedBackendError
from .history import History
from .updates import LabUpdate
from ..qapi import RunState
from ..stats import GuestStats

log = logging.getLogger("balloonlab.client")
T = TypeVar("T")
_qmp_log = logging.getLogger("balloonlab.qmp")

#: Where QEMU puts -device children (with and without id=).
PERIPHERAL_CONTAINERS = ("/machine/peripheral", "/machine/peripheral-anon")
INTERVAL_PROPERTY = "guest-stats-polling-interval"
#: Watcher pacing (seconds): fastest stats read, slowest, and how often to re-read the interval.
FASTEST, SLOWEST, META_PERIOD = 0.5, 2.0, 2.0
ADVANCE, TRACE, REPORTS = "x-balloonlab-advance", "x-balloonlab-trace", "x-balloonlab-reports"


async def _bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` without its extra task on Python >= 3.11 (30 us a call, docs/benchmarks.md)."""
    if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10 has no asyncio.timeout
        return await asyncio.wait_for(awaitable, seconds)
    async with asyncio.timeout(seconds):
        return await awaitable


def _report_columns(reply: dict) -> dict[str, array]:
    """The columns of an ``x-balloonlab-reports`` reply by name: its ``rows`` are base64 of little-endian uint64,
    row after row, each row as ``columns`` names them (docs/emulator.md)."""
    rows = array("Q")
    rows.frombytes(base64.b64decode(reply["rows"]))
    if sys.byteorder == "big":
        rows.byteswap()
    names = reply["columns"]
    return {name: rows[i::len(names)] for i, name in enumerate(names)}


class ExchangeTap(Protocol):
    """Something that sees every QMP exchange and event of a connection (a recorder, client/recording.py).

    Called on balloonlab's loop thread, in the order things happened; must be quick and must not raise.
    """

    def on_exchange(self, command: str, arguments: dict | None, reply: dict, sent: float, seconds: float) -> None:
        """``reply`` is ``{"return": ...}`` or ``{"error": {"class": ..., "desc": ...}}``; ``sent`` the host time
        the command went out, ``seconds`` its round trip."""

    def on_event(self, event: dict) -> None:
        """A QMP event, as on the wire."""


#: What ``_read_basics`` learns about the VM, put back when a reconnect's new connection fails half-way.
_BASICS = ("greeting", "qemu_version", "commands", "device_path", "devices", "ram_size")


class _QMP(QMPClient):
    """QMPClient that hands events to one callback instead of queueing them in unbounded listeners."""

    def __init__(self, on_event: Callable[[dict], None]) -> None:
        super().__init__()
        self.logger = _qmp_log
        self._on_event = on_event
        self.reaper: asyncio.Task | None = None

    # qemu.qmp logs every message at DEBUG with an eagerly built, indented JSON dump (str(msg)); a day of virtual
    # time replayed from the trace would spend most of its CPU there.  Build it only when DEBUG is on.
    def _cb_outbound(self, msg: Any) -> Any:
        return super()._cb_outbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

    def _cb_inbound(self, msg: Any) -> Any:
        return super()._cb_inbound(msg) if self.logger.isEnabledFor(logging.DEBUG) else msg

    # QMPClient queues each request for a writer task, which sends it one loop iteration later; the write never
    # blocks (asyncio buffers it), so send it at once.  The reply still comes back through the library's reader
    # and its per-request queue (``_pending``).  Saves a task switch per command, which is most of what a lab
    # adds over a bare QMPClient on a fast server (docs/benchmarks.md).
    async def _issue(self, msg: Any) -> Any:
        msg_id = msg["id"] if "id" in msg else None
        self._pending[msg_id] = asyncio.Queue(maxsize=1)
        try:
            await self._send(msg)
        except BaseException:
            del self._pending[msg_id]
            raise
        return msg_id

    async def _event_dispatch(self, msg: Any) -> None:
        try:
            self._on_event(dict(msg))
        except Exception:  # an event must never kill the reader task
            log.exception("balloonlab: handling QMP event %r failed", msg)


class BalloonClient:
    """One connection to one balloon device.  Every coroutine runs on balloonlab's background loop."""

    def __init__(self, socket_path: str, device_path: str | None = None, *, history: History | None = None,
                 command_timeout: float = 10.0, max_events: int = 1000) -> None:
        self.socket_path = str(socket_path)
        self.device_path = device_path
        self._explicit_device = device_path is not None
        self.command_timeout = command_timeout
        self.devices: list[str] = []
        self.qemu_version: str | None = None
        self.greeting: dict | None = None
        self.commands: frozenset[str] = frozenset()
        self.ram_size: int | None = None
        self.interval: int | None = None
        self.actual: int | None = None
        #: The last balloon target (bytes) requested through this connection: QEMU cannot be asked for it.
        self.target: int | None = None
        self.last_stats: GuestStats | None = None
        self.run_state: RunState | None = None
        self.running: bool | None = None
        self.events: collections.deque[dict] = collections.deque(maxlen=max_events)
        self._events_lock = threading.Lock()  # appended on the loop, copied from any thread
        self.history = history if history is not None else History()
        self.history.on_enabled_change = lambda: _loop.call_soon(self._update_follower)
        self.disconnect_reason: str | None = None
        #: For a lab that started its QEMU: how that process ended (None while it runs).  When it has ended, that
        #: is the real cause of a lost connection, and every message says it instead of guessing.
        self.exit_cause: Callable[[], str | None] | None = None

        self._qmp: _QMP | None = None
        self._connected = False
        self._closing = False
        self._subscribers: dict[int, Callable[[LabUpdate], None]] = {}
        self._sub_lock = threading.Lock()
        self._next_sub = 0
        self._follow_task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._refresh_meta = True
        self._last_raw: dict | None = None
        self._replaying = False  # a virtual-clock advance is feeding reports from the trace: the follower waits
        #: Who sees every exchange and event (recorders).  Replaced, never mutated, so the loop reads it unlocked.
        self._taps: tuple[ExchangeTap, ...] = ()

    # Connection ------------------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """Where this client reaches its VM, for messages: the QMP socket path."""
        return self.socket_path

    @property
    def connected(self) -> bool:
        return self._connected and self._qmp is not None and self._qmp.runstate == Runstate.RUNNING

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect, negotiate, find the balloon, read the basics; start following if anyone wants updates."""
        if self.connected:
            return
        await self._switch_to(await self._open(timeout))

    async def reconnect(self, timeout: float = 5.0) -> None:
        """Open a new connection first; only once it works, drop the old one and switch to the new.  A failed
        attempt leaves a working connection as it was."""
        await self._switch_to(await self._open(timeout))

    async def _open(self, timeout: float) -> _QMP:
        """A connected, negotiated QMPClient.  A socket that does not exist yet or refuses (a QEMU just started)
        is tried again until ``timeout``; then the last reason is the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            qmp = _QMP(self._on_event)
            try:
                await asyncio.wait_for(qmp.connect(self.socket_path), max(0.01, deadline - loop.time()))
                return qmp
            except (ConnectError, OSError, EOFError, asyncio.TimeoutError) as exc:
                await self._discard(qmp)
                cause = getattr(exc, "exc", None) or exc
                early = isinstance(cause, (FileNotFoundError, ConnectionRefusedError))
                if early and loop.time() + 0.05 < deadline and self.exit_cause_now() is None:
                    await asyncio.sleep(0.05)
                    continue
                if self.exit_cause_now() is not None:
                    raise BalloonDisconnectedError(self.disconnected_message()) from None
                if isinstance(cause, asyncio.TimeoutError):
                    why = f"no QMP greeting within {timeout:g} s"
                elif isinstance(cause, OSError) and cause.errno in (errno.EAGAIN, errno.EINVAL):
                    # Linux refuses a unix connection whose listen queue is full; asyncio then reports EINVAL
                    why = "its queue of waiting connections is full"
                else:
                    why = str(cause) or type(cause).__name__
                raise BalloonDisconnectedError(
                    f"cannot connect to the QMP socket {self.socket_path}: {why}. Is QEMU "
                    "(or `balloonlab emulate`) running with -qmp unix:PATH,server=on,wait=off, and is nobody else "
                    "holding the socket's only connection?") from None

    def exit_cause_now(self) -> str | None:
        return self.exit_cause() if self.exit_cause is not None else None

    async def _switch_to(self, qmp: _QMP) -> None:
        """Make ``qmp`` the lab's connection once it has read the basics; until then the old one is kept, so a
        new connection that fails (no balloon there, no answer) costs a working lab nothing."""
        old = self._qmp
        keep = old if old is not None and old is not qmp and self.connected else None
        known = {name: getattr(self, name) for name in _BASICS}
        self._closing = False
        self._replaying = False
        self._qmp = qmp  # from here the old connection's monitor stays silent (it is no longer self._qmp)
        self._connected = True
        self.disconnect_reason = None
        if self._wake is None:
            self._wake = asyncio.Event()
        _loop.spawn(self._monitor(qmp), "balloonlab-monitor")
        try:
            await self._read_basics()
            if self._demand():
                await self.read_stats()  # history and subscribers start from the stats found on connecting
        except BaseException:
            if keep is not None and keep.runstate == Runstate.RUNNING and self._qmp is qmp:
                self._qmp = keep  # back to the connection that works, and what it said; the new one goes
                for name, value in known.items():
                    setattr(self, name, value)
                await self._discard(qmp)
            else:
                await self.disconnect()
            raise
        if old is not None and old is not qmp:
            await self._discard(old)
        self._update_follower()

    async def _read_basics(self) -> None:
        assert self._qmp is not None  # connect() set it before reading the basics
        greeting = self._qmp.greeting
        raw = getattr(greeting, "_raw", None) or {}
        self.greeting = dict(raw)
        v = (raw.get("QMP", {}).get("version", {}) or {}).get("qemu", {})
        if v:
            self.qemu_version = f"{v.get('major')}.{v.get('minor')}.{v.get('micro')}"
        cmds = await self.execute("query-commands")
        self.commands = frozenset(c["name"] for c in cmds)
        await self._discover()
        try:
            mem = await self.execute("query-memory-size-summary")
            self.ram_size = int(mem["base-memory"]) + int(mem.get("plugged-memory", 0))
        except QMPError:
            self.ram_size = None
        await self.read_run_state()
        await self.read_interval()
        await self.read_actual()
        self._refresh_meta = False

    async def _discover(self) -> None:
        if self._explicit_device:
            assert self.device_path is not None
            if not await self._is_balloon(self.device_path):
                raise NoBalloonDeviceError(
                    f"{self.device_path} is not a virtio-balloon device (it has no {INTERVAL_PROPERTY} property); "
                    "leave device_path out to let balloonlab find the balloon")
            self.devices = [self.device_path]
            return
        found: list[str] = []
        for parent in PERIPHERAL_CONTAINERS:
            try:
                children = await self.execute("qom-list", {"path": parent})
            except QMPError:
                continue  # QEMU creates these containers lazily
            for child in children:
                if str(child.get("type", "")).startswith("child<virtio-balloon"):
                    path = f"{parent}/{child['name']}"
                    if await self._is_balloon(path):
                        found.append(path)
        if not found:
            raise NoBalloonDeviceError(
                f"QEMU at {self.socket_path} has no virtio-balloon device under /machine/peripheral or "
                "/machine/peripheral-anon. Start it with -device virtio-balloon-pci,id=balloon0 (or hot-plug one: "
                "device_add driver=virtio-balloon-pci id=balloon0).")
        found.sort(key=lambda p: (not p.startswith("/machine/peripheral/"), p))
        if self.device_path not in found:
            self.device_path = found[0]
        self.devices = found

    async def _is_balloon(self, path: str) -> bool:
        try:
            props = await self.execute("qom-list", {"path": path})
        except QMPError:
            return False
        return any(p.get("name") == INTERVAL_PROPERTY for p in props)

    async def _monitor(self, qmp: _QMP) -> None:
        """Notice a lost connection at once (the reader sees EOF) and reap the QMPClient's tasks."""
        while qmp.runstate == Runstate.RUNNING:
            await qmp.runstate_changed()
        reason = await self._reap(qmp)
        if qmp is not self._qmp or self._closing:
            return
        if self.exit_cause is not None:  # the socket's EOF can come a moment before the exit status is there
            for _ in range(20):
                if self.exit_cause_now() is not None or qmp is not self._qmp or self._closing:
                    break
                await asyncio.sleep(0.05)
            if qmp is not self._qmp or self._closing:
                return
        self._connected = False
        self.disconnect_reason = reason or "the server closed the connection"
        self._poke()
        self._notify(LabUpdate("disconnected", error=self.disconnected_message()))

    async def _reap(self, qmp: _QMP) -> str | None:
        if qmp.reaper is None:
            qmp.reaper = _loop.spawn(self._disconnect_quietly(qmp), "balloonlab-reap")
        return await asyncio.shield(qmp.reaper)

    @staticmethod
    async def _disconnect_quietly(qmp: _QMP) -> str | None:
        try:
            await qmp.disconnect()
        except EOFError:
            return "QEMU closed the connection (end of file)"
        except Exception as exc:  # whatever ended the reader: it is the reason, not an error of ours
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    async def _discard(self, qmp: _QMP) -> None:
        if qmp.runstate != Runstate.IDLE:
            await self._reap(qmp)

    def disconnected_message(self) -> str:
        cause = self.exit_cause_now()
        if cause is not None:
            return f"{cause}; start a new one with balloonlab.launch()"
        return (f"lost the QMP connection to {self.socket_path} ({self.disconnect_reason or 'not connected'}): "
                "QEMU exited or closed the socket. Call lab.reconnect() once it is back.")

    async def disconnect(self, notify: str | None = None) -> None:
        """Close the connection (idempotent); keeps subscribers, history and events for a later reconnect.

        ``notify``: tell subscribers with a "disconnected" update carrying this reason (``lab.close()`` does, so a
        live view can say the lab is gone; ``reconnect()`` does not).
        """
        was_connected = self._connected
        self._closing = True
        self._connected = False
        self._poke()
        task, self._follow_task = self._follow_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        qmp = self._qmp
        if qmp is not None:
            await self._discard(qmp)
        if notify and was_connected:
            self.disconnect_reason = notify
            self._notify(LabUpdate("disconnected", error=notify))

    # Commands --------------------------------------------------------------------------------------------------
    async def execute(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> Any:
        """Run one QMP command; QMPError for QEMU's error reply, BalloonDisconnectedError for a lost QEMU."""
        qmp = self._qmp
        if qmp is None or not self._connected or qmp.runstate != Runstate.RUNNING:
            raise BalloonDisconnectedError(self.disconnected_message())
        timeout = self.command_timeout if timeout is None else timeout
        taps = self._taps
        if taps:
            sent, began = time.time(), time.perf_counter()
        try:
            result = await _bounded(qmp.execute(command, arguments or None), timeout)
        except ExecuteError as exc:
            if taps:
                self._tap_exchange(taps, command, arguments, {"error": {"class": exc.error_class,
                                                                        "desc": exc.error.error.desc}},
                                   sent, time.perf_counter() - began)
            raise QMPError(exc.error_class, exc.error.error.desc, command) from None
        except (ExecInterruptedError, StateError, EOFError, ConnectionError, BrokenPipeError) as exc:
            self.disconnect_reason = self.disconnect_reason or f"{type(exc).__name__}: {exc}"
            raise BalloonDisconnectedError(self.disconnected_message()) from None
        except asyncio.TimeoutError:
            raise BalloonDisconnectedError(
                f"QEMU at {self.socket_path} did not answer {command!r} within {timeout:g} s (is it stopped with "
                "SIGSTOP, or stuck?)") from None
        if taps:
            self._tap_exchange(taps, command, arguments, {"return": result}, sent, time.perf_counter() - began)
        value = (arguments or {}).get("value")
        if command == "balloon" and isinstance(value, int):
            self._observe_target(value)  # set_target, lab.qmp("balloon"), %%qmp balloon alike
        return result

    @staticmethod
    def _tap_exchange(taps: tuple[ExchangeTap, ...], command: str, arguments: dict | None, reply: dict,
                      sent: float, seconds: float) -> None:
        for tap in taps:
            try:
                tap.on_exchange(command, arguments, reply, sent, seconds)
            except Exception:
                log.exception("balloonlab: an exchange tap raised (taps must not raise)")

    def add_tap(self, tap: ExchangeTap) -> Callable[[], None]:
        """Show ``tap`` every exchange and event from now on (thread-safe); returns an idempotent remove."""
        with self._sub_lock:
            self._taps = (*self._taps, tap)

        def remove() -> None:
            with self._sub_lock:
                self._taps = tuple(t for t in self._taps if t is not tap)

        return remove

    async def qom_get(self, prop: str) -> Any:
        return await self.execute("qom-get", {"path": self.device_path, "property": prop})

    async def read_stats(self) -> GuestStats:
        raw = await self.qom_get("guest-stats")
        return self._observe_stats(raw)

    async def read_interval(self) -> int:
        value = await self.qom_get(INTERVAL_PROPERTY)
        self._observe_interval(int(value))
        return int(value)

    async def set_interval(self, value: Any) -> None:
        """qom-set exactly the value given, so QEMU's own errors (type, range) come back verbatim."""
        await self.execute("qom-set", {"path": self.device_path, "property": INTERVAL_PROPERTY, "value": value})
        await self.read_interval()
        self._poke()

    async def read_actual(self) -> int | None:
        try:
            value = (await self.execute("query-balloon"))["actual"]
        except QMPError:
            return None
        self._observe_actual(int(value))
        return int(value)

    async def set_target(self, size: int) -> None:
        await self.execute("balloon", {"value": size})
        self._poke()

    async def read_host_rss(self) -> int:
        """Host memory the VM holds.  QMP cannot tell (QEMU does not report its own RSS); the libvirt backend can."""
        raise UnsupportedBackendError(
            "host_rss needs a VM this process can see (balloonlab.launch() or an emulated lab) or libvirt's "
            f"(balloonlab.connect('qemu:///system', domain=...)); the QEMU at {self.socket_path} may run anywhere "
            "(read its VmRSS in /proc/PID/status on its host)")

    def take_notice(self) -> str | None:
        """Nothing to tell the user: a QMP client has no side effects to confess (see ``LibvirtClient``)."""
        return None

    async def read_run_state(self) -> dict:
        st = await self.execute("query-status")
        self.run_state = st.get("status")
        self.running = bool(st.get("running"))
        return st

    # Observations: one place decides what changed and tells subscribers ---------------------------------------
    def _observe_stats(self, raw: dict, when: float | None = None, record: bool = True) -> GuestStats:
        """``when``: the host time of the report (a replayed report's own); default now.  ``record=False``: the
        caller has put this report into history already."""
        if raw == self._last_raw and self.last_stats is not None:
            return self.last_stats
        stats = GuestStats(raw)
        self._last_raw = raw
        self.last_stats = stats
        when = time.time() if when is None else when
        if record and self._demand():
            self.history.add(when, stats, self.interval, self.actual)
        self._notify(LabUpdate("stats", stats=stats, time=when))
        return stats

    # Virtual-clock replay: every report of an advance, not just the last --------------------------------------
    @property
    def wants_replay(self) -> bool:
        """Whether an advance should replay its reports: someone watches (or history records) and the emulator
        keeps a report log."""
        return self._demand() and REPORTS in self.commands

    async def begin_replay(self) -> tuple[int, float]:
        """Pause the follower's stats reads and return (report cursor, longest chunk in seconds)."""
        interval = await self.read_interval()
        reports = await self.execute(REPORTS, {"path": self.device_path, "since": 2**63 - 1})
        self._replaying = True  # only once both reads worked: a failure here must not pause the follower for good
        # Read at half the log's length: the driver's boot report or a reset can add reports besides the polls.
        per_chunk = max(1, reports["capacity"] // 2)
        return reports["next"], (per_chunk * interval if interval > 0 else float("inf"))

    def end_replay(self) -> None:
        self._replaying = False
        self._poke()

    async def replay(self, cursor: int) -> int:
        """Feed each report the emulator logged since ``cursor`` (a virtual-clock advance produced them), with its
        own time, to history and subscribers; returns the new report cursor."""
        reports = await self.execute(REPORTS, {"path": self.device_path, "since": cursor})
        if reports["first"] > cursor:
            log.warning("balloonlab: %d stats reports fell out of the emulator's report log before they were "
                        "read; history misses them", reports["first"] - cursor)
        self._observe_reports(reports)
        return reports["next"]

    def _observe_reports(self, reports: dict) -> None:
        """A reply of ``x-balloonlab-reports`` (emulator/reportlog.py): all into history at once; a GuestStats and
        a "stats" update for each report only when someone subscribes (else for the last one only, which becomes
        ``last_stats``)."""
        columns = _report_columns(reports)
        wall_ns, last_update = columns.pop("wall-ns"), columns.pop("last-update")
        n = len(wall_ns)
        if not n:
            return
        if self._demand():
            self.history.add_columns([(t + 500_000) // 1_000_000 for t in wall_ns], last_update,
                                     {key.removeprefix("stat-"): values for key, values in columns.items()},
                                     self.interval, self.actual)
        for i in range(0 if self._subscribers else n - 1, n):
            raw = {"stats": {key: values[i] for key, values in columns.items()}, "last-update": last_update[i]}
            self._observe_stats(raw, when=wall_ns[i] / 1e9, record=False)

    def _observe_interval(self, value: int) -> None:
        if value != self.interval:
            self.interval = value
            self._notify(LabUpdate("interval", interval=value))

    def _observe_actual(self, value: int) -> None:
        if value != self.actual:
            self.actual = value
            self._notify(LabUpdate("actual", actual=value))

    def _observe_target(self, value: int) -> None:
        # Every accepted request is news (the same target twice is still a request), unlike interval/actual.
        self.target = value
        self._notify(LabUpdate("target", target=value))

    def events_snapshot(self) -> list[dict]:
        """The recorded events, oldest first (safe from any thread)."""
        with self._events_lock:
            return list(self.events)

    def _on_event(self, event: dict) -> None:
        with self._events_lock:
            self.events.append(event)
        for tap in self._taps:
            try:
                tap.on_event(event)
            except Exception:
                log.exception("balloonlab: an exchange tap raised on an event (taps must not raise)")
        self.history.add_event(event)
        name = event.get("event")
        if name == "STOP":
            self.running, self.run_state = False, "paused"
        elif name == "RESUME":
            self.running, self.run_state = True, "running"
        elif name in ("RESET", "SHUTDOWN", "WAKEUP", "SUSPEND"):
            self._refresh_meta = True
        self._notify(LabUpdate("event", event=event))
        if name == "BALLOON_CHANGE":
            actual = (event.get("data") or {}).get("actual")
            if isinstance(actual, int):
                self._observe_actual(actual)
        self._poke()

    # Subscriptions and the follower -----------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[LabUpdate], None]) -> Callable[[], None]:
        """Thread-safe; returns an idempotent unsubscribe function."""
        with self._sub_lock:
            key = self._next_sub
            self._next_sub += 1
            self._subscribers[key] = callback
        _loop.call_soon(self._update_follower)

        def unsubscribe() -> None:
            with self._sub_lock:
                self._subscribers.pop(key, None)
            _loop.call_soon(self._update_follower)

        return unsubscribe

    @property
    def following(self) -> bool:
        """True while the follower task runs."""
        return self._follow_task is not None and not self._follow_task.done()

    def _demand(self) -> bool:
        return bool(self._subscribers) or self.history.enabled

    def _notify(self, update: LabUpdate) -> None:
        with self._sub_lock:
            callbacks = list(self._subscribers.values())
        for cb in callbacks:
            try:
                cb(update)
            except Exception:
                log.exception("balloonlab: a subscribe callback raised (callbacks must not raise)")

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _update_follower(self) -> None:
        """On the loop: start the follower when wanted and connected; a running one exits by itself."""
        if self._demand() and self.connected and not self.following:
            self._follow_task = _loop.spawn(self._follow(), "balloonlab-follow")
        else:
            self._poke()

    def _stats_period(self) -> float:
        if not self.running or not self.interval:
            return SLOWEST
        return min(SLOWEST, max(FASTEST, self.interval / 2))

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        next_meta = loop.time() + META_PERIOD
        wake = self._wake
        assert wake is not None
        while self._demand() and self.connected:
            wake.clear()
            try:
                if self._refresh_meta or loop.time() >= next_meta:
                    if self._refresh_meta:
                        self._refresh_meta = False
                        await self.read_run_state()
                        await self.read_actual()
                    await self.read_interval()
                    next_meta = loop.time() + META_PERIOD
                if not self._replaying:
                    await self.read_stats()
            except BalloonDisconnectedError as exc:
                if not self.connected:
                    return  # the monitor reports the lost connection; reconnect() starts a new follower
                log.warning("balloonlab follower: %s", exc)  # a slow or frozen QEMU: keep following
            except QMPError as exc:  # e.g. the device was unplugged: say so once per period, keep going
                log.warning("balloonlab follower: %s", exc)
            except Exception:  # a surprise in one reading must not end live updates for good
                log.exception("balloonlab follower: unexpected error, continuing")
            try:
                await asyncio.wait_for(wake.wait(), self._stats_period())
            except asyncio.TimeoutError:
                pass


__all__ = ["BalloonClient", "ExchangeTap", "PERIPHERAL_CONTAINERS"]
