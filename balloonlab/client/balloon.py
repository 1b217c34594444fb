"""``Balloon``: the synchronous lab object people, magics and widgets use.

    lab = balloonlab.emulate()                 # an in-process emulated QEMU, spoken to over real QMP
    lab = balloonlab.connect("/path/qmp.sock") # any QMP server: live QEMU or `balloonlab emulate`
    lab = balloonlab.launch(memory="512M")     # boots qemu-system-x86_64 with the tiny guest

Every method is a thin synchronous wrapper: the work runs on balloonlab's background loop (``client/loop.py``) and the
caller waits with a timeout, so the facade is safe from a notebook cell (whose thread runs the kernel's own loop),
from a widget's comm handler thread and from plain scripts alike.  The lab owns what it started: ``close()`` (or
the context manager, or garbage collection, or interpreter exit) stops the in-process emulator or the live VM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Literal, TypeVar, get_args

from . import loop as _loop
from .backend import BalloonBackend
from .connection import ADVANCE, TRACE, BalloonClient
from .updates import LabUpdate
from .doctor import Diagnosis, diagnose
from ..errors import (BalloonDisconnectedError, BalloonError, InvalidValueError, LaunchError, QMPError,
                      UnsupportedBackendError, VirtualClockRequiredError)
from .history import History
from .recording import Recorder
from ..stats import GuestStats
from ..units import format_size, parse_duration, parse_guest_size, parse_interval

if TYPE_CHECKING:
    from ..emulator.config import ClockKind, GuestModel, QemuVersion
    from ..emulator.workloads import RecordedCurve
    from ..qapi import RunState
    from .host import Host

log = logging.getLogger("balloonlab")
T = TypeVar("T")

#: How a lab reaches its VM: an in-process emulator, a QEMU balloonlab launched, a socket it was given, or a
#: libvirt domain.
Backend = Literal["emulated", "live", "connected", "libvirt"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
STATUS, GUEST = "x-balloonlab-status", "x-balloonlab-guest"


@dataclass(frozen=True)
class VirtioState:
    """The balloon's virtio side at one moment (``lab.virtio()``, from ``x-balloonlab-status``).

    Feature words as bit masks and names (balloon bits ``VIRTIO_BALLOON_F_*`` and transport bits ``VIRTIO_F_*``,
    ``VIRTIO_RING_F_*``), the device status byte the driver wrote (15 = ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK),
    the number of virtqueues, and the config space: ``num_pages`` (what the host asks the guest to give up) and
    ``actual`` (what the driver says it holds), both in 4 KiB pages, and its bytes: 16 with QEMU's default
    page-poison=on (then also free_page_hint_cmd_id and poison_val), 8 when page-poison, free-page-hint and
    free-page-reporting are all off.
    """

    host_features: int
    guest_features: int
    host_feature_names: tuple[str, ...]
    guest_feature_names: tuple[str, ...]
    device_status: int
    num_queues: int
    num_pages: int
    actual_pages: int
    config_bytes: bytes

    @classmethod
    def from_status(cls, device: dict) -> "VirtioState":
        """From one entry of ``x-balloonlab-status``'s ``devices``."""
        host, guest, config = device["host-features"], device["guest-features"], device["config"]
        return cls(host_features=host["mask"], guest_features=guest["mask"], host_feature_names=tuple(host["names"]),
                   guest_feature_names=tuple(guest["names"]), device_status=device["device-status"],
                   num_queues=device["num-queues"], num_pages=config["num_pages"], actual_pages=config["actual"],
                   config_bytes=bytes.fromhex(config["bytes"]))

    @staticmethod
    def _full(name: str) -> str:
        return name if name.startswith("VIRTIO_") else "VIRTIO_BALLOON_F_" + name

    def offered(self, name: str) -> bool:
        """Whether the device offers a feature (``"STATS_VQ"`` or ``"VIRTIO_BALLOON_F_STATS_VQ"``)."""
        return self._full(name) in self.host_feature_names

    def accepted(self, name: str) -> bool:
        """Whether the driver accepted (negotiated) a feature."""
        return self._full(name) in self.guest_feature_names


def _release(client: BalloonBackend, emulator: Any, vm: Any, timeout: float) -> None:
    """Disconnect and stop what the lab started.  Must not reference the Balloon (it runs from its finalizer)."""
    if _loop.in_loop_thread():  # closed from a subscribe callback: do it in the background, never block the loop
        threading.Thread(target=_release, args=(client, emulator, vm, timeout), daemon=True).start()
        return
    try:
        _loop.run(client.disconnect(notify="the lab was closed (lab.close())"), timeout)
    except Exception as exc:
        log.warning("balloonlab: disconnecting from %s: %r", client.address, exc)
    if emulator is not None:
        try:
            _loop.run_to_end(emulator.stop(), timeout)
        except Exception as exc:
            log.warning("balloonlab: stopping the emulator at %s: %r", client.socket_path, exc)
    if vm is not None:
        try:
            vm.stop()
        except Exception as exc:
            log.warning("balloonlab: stopping QEMU (pid %s): %r", getattr(vm, "pid", "?"), exc)


class Balloon:
    """One VM's balloon device, reached over QMP or libvirt.  Build it with :func:`emulate`, :func:`connect` or
    :func:`launch`.

    ``client``: what reaches the device (``client/backend.py``); by default a held QMP connection to
    ``socket_path``.
    """

    def __init__(self, socket_path: str = "", *, backend: Backend = "connected", device_path: str | None = None,
                 history: bool = True, timeout: float = 10.0, emulator: Any = None, vm: Any = None,
                 client: BalloonBackend | None = None, name: str | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}")
        self.backend = backend
        #: The VM's name: given by its host (``"vm0"``...), else the socket's file name without its extension
        #: (Proxmox's ``/var/run/qemu-server/100.qmp`` is ``"100"``), for an emulator's private socket ``"vm0"``.
        self.name = name or _default_name(socket_path, backend)
        self.timeout = timeout
        self._emulator = emulator
        self._vm = vm
        #: the Host this VM is on (set by Host.add_vm; weak: the host's finalizer holds its labs)
        self._host: weakref.ref[Host] | None = None
        if client is None:
            client = BalloonClient(socket_path, device_path, command_timeout=timeout)
            if vm is not None:
                client.exit_cause = vm.exit_description
        self._client: BalloonBackend = client
        self._recorders: list[Recorder] = []
        self._close_lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _release, self._client, emulator, vm, timeout)
        self._client.history.enabled = history  # before connecting: history starts with the stats found then
        try:
            self._run(self._client.connect(timeout=timeout), timeout + 5.0)
        except BaseException:
            self.close()
            raise

    # Plumbing --------------------------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise BalloonDisconnectedError("this lab is closed; start a new one (balloonlab.emulate/connect/launch)")
        timeout = self.timeout if timeout is None else timeout
        return _loop.run_bounded(coro, timeout + 1.0, f"no answer from {self._client.address} within {timeout:g} s")

    def _has(self, command: str) -> bool:
        return command in self._client.commands

    # The public surface (docs/architecture.md) -------------------------------------------------------------
    @property
    def socket_path(self) -> str:
        """The QMP unix socket (qmp-shell, `%%qmp` or another tool can attach to it as well)."""
        return self._client.socket_path

    @property
    def device_path(self) -> str:
        """The balloon's QOM path, found by discovery (e.g. ``/machine/peripheral/balloon0``)."""
        return self._client.device_path or ""

    @property
    def polling_interval(self) -> int:
        """``guest-stats-polling-interval`` in seconds, read from the device (0 = off)."""
        return self._run(self._client.read_interval())

    @polling_interval.setter
    def polling_interval(self, value: int | str) -> None:
        """Whole seconds (``2``, ``"30s"``, ``"1m"``; 0 turns polling off), checked by ``units.parse_interval``
        before anything is sent: a fraction, a negative or a word is an :class:`InvalidValueError` naming the
        value, in the words ``%balloon poll`` uses.  ``lab.qmp("qom-set", ...)`` sends any value as it is."""
        self._run(self._client.set_interval(parse_interval(value)))

    def stats(self) -> GuestStats:
        """The guest's latest report (``qom-get guest-stats``)."""
        return self._run(self._client.read_stats())

    def set_target(self, size: str | int) -> None:
        """Ask the guest to shrink or grow to ``size`` (``"256M"``, ``"1.5G"``, or bytes): QMP ``balloon``.

        A bare number is bytes, as on the wire (``set_target(lab.actual // 2)``).  Sizes no guest can keep (0,
        negative, below 16 MiB: ``set_target(512)`` is nearly always a forgotten ``"512M"``) raise
        :class:`InvalidValueError` before anything is sent, in the words ``%balloon target`` uses;
        ``lab.qmp("balloon", value=...)`` sends any value as it is.  QEMU only tells the guest; ``actual`` moves
        when the guest's driver does (BALLOON_CHANGE events).
        """
        self._run(self._client.set_target(parse_guest_size(size, "target")))

    @property
    def actual(self) -> int:
        """``query-balloon`` actual: the VM's logical memory size in bytes (RAM minus the balloon)."""
        value = self._run(self._client.read_actual())
        if value is None:
            raise QMPError("DeviceNotActive", "No balloon device has been activated", "query-balloon")
        return value

    @property
    def target(self) -> int | None:
        """The last balloon target (bytes) requested through this lab (``set_target``, ``qmp("balloon")``), or
        None.  QEMU cannot be asked for the current target; a target set by another QMP client is not seen."""
        return self._client.target

    @property
    def ram_size(self) -> int:
        """The VM's RAM in bytes (``query-memory-size-summary``)."""
        return self._client.ram_size or 0

    @property
    def events(self) -> list[dict]:
        """QMP events received so far (bounded; wire dicts with timestamp, event, data)."""
        return self._client.events_snapshot()

    @property
    def history(self) -> History:
        """Samples and events: every report since the lab connected (bounded, see client/history.py).  Recording
        is on by default; ``emulate(history=False)`` (or ``lab.history.enabled = False``) records only while
        something subscribes (a panel, ``%balloon watch``)."""
        return self._client.history

    def qmp(self, command: str, _arguments: dict | None = None, /, **arguments: Any) -> Any:
        """Any QMP command: ``lab.qmp("qom-list", path="/machine/peripheral")``; raises QMPError.

        Arguments whose names are not Python identifiers go in a dict: ``lab.qmp("cmd", {"a-b": 1})``.
        """
        args = dict(_arguments or {}, **arguments)
        try:
            result = self._run(self._client.execute(command, args or None))
        finally:
            notice = self._client.take_notice()  # e.g. libvirt's passthrough taints the domain: said once
            if notice:
                warnings.warn(notice, UserWarning, stacklevel=2)
        if command in ("qom-set", "cont", "stop", "system_reset", "balloon"):
            self._client._refresh_meta = True
            _loop.call_soon(self._client._poke)
        return result

    def advance(self, duration: str | float) -> None:
        """Move the emulator's virtual clock forward (``"30s"``, ``"5m"``, 12.5): every due timer runs in order.

        A host's VM shares the host's clock, so this advances the whole host (:meth:`Host.advance
        <balloonlab.client.host.Host.advance>`): every VM's history, panel and watch sees each report on the way,
        not only this lab's."""
        seconds = parse_duration(duration)
        host = self._host() if self._host is not None else None
        if host is not None and not host.closed and not self.closed:
            host.advance(seconds)
            return
        if not self._has(ADVANCE):
            raise VirtualClockRequiredError(
                f"advance() needs an emulated lab on a virtual clock; this {self.backend} lab "
                f"(QEMU {self.qemu_version or '?'}) runs on real time. Use "
                "balloonlab.emulate(clock='virtual') (or `balloonlab emulate --clock virtual`), or just wait.")
        try:
            if self._client.wants_replay:
                self._advance_replaying(seconds)
            else:  # nobody watches: one command, nothing else to do
                self._run(self._client.execute(ADVANCE, {"seconds": seconds}))
        except QMPError as exc:
            if exc.error_class == "GenericError" and "virtual" in exc.desc:
                # In this process the fix is an argument; behind a socket, the emulator's command line.
                how = ("balloonlab.emulate(clock='virtual')" if self._emulator is not None else
                       f"the command-line option --clock virtual (balloonlab emulate --clock virtual -qmp "
                       f"unix:{self.socket_path},server=on,wait=off)")
                raise VirtualClockRequiredError(
                    f"{exc.desc} -- this lab's emulator runs on real time; start one with {how}") from None
            raise
        _loop.call_soon(self._client._poke)

    def _advance_replaying(self, seconds: float) -> None:
        advance_replaying([self], seconds, lambda step: self._run(self._client.execute(ADVANCE, {"seconds": step})))

    @property
    def wants_replay(self) -> bool:
        """Whether a virtual-clock advance should replay each report it produces to this lab's history and
        subscribers (someone watches, and the emulator keeps a trace)."""
        return self._client.wants_replay

    @property
    def host_rss(self) -> int:
        """Bytes of host memory this VM's QEMU process holds (its VmRSS): what the VM really costs the host,
        as opposed to what the guest says it uses.  Emulated labs report their host model's figure; a launched
        VM's is read from ``/proc``; a libvirt lab's is libvirt's ``rss``."""
        if self._vm is not None:
            return int(self._vm.rss())
        if self._has(STATUS):
            return int(self.emulator_state()["host-rss"])
        return self._run(self._client.read_host_rss())  # libvirt knows; a QMP client says why it cannot

    def trace(self, since: int = 0) -> dict:
        """The stats virtqueue exchanges the emulator recorded (``x-balloonlab-trace``); emulated labs only."""
        self._require(TRACE, "trace()")
        return self._run(self._client.execute(TRACE, {"path": self.device_path, "since": since}))

    def guest(self, action: str, **params: Any) -> Any:
        """Control the emulated guest (workloads, stop/start answering): ``x-balloonlab-guest``."""
        self._require(GUEST, "guest()")
        result = self._run(self._client.execute(GUEST, {"action": action, **params}))
        _loop.call_soon(self._client._poke)
        return result

    def guest_exec(self, command: str, timeout: float = 30) -> str:
        """Run a shell command inside a launched live guest and return its output."""
        if self._vm is None:
            raise UnsupportedBackendError(
                f"guest_exec() runs commands in a VM started by balloonlab.launch(); this lab is {self.backend}"
                + (" (use lab.guest(action, ...) to drive the emulated guest)" if self.backend == "emulated" else ""))
        return self._vm.exec(command, timeout=timeout)

    def doctor(self) -> Diagnosis:
        """Why the stats look the way they do (polling off, no driver, paused, stale, partial...)."""
        stats = self.stats()
        interval = self.polling_interval
        state = self._run(self._client.read_run_state())
        return diagnose(stats, interval, now=self._wall_now(), running=bool(state.get("running")),
                        run_state=state.get("status"))

    def subscribe(self, callback: Callable[[LabUpdate], None]) -> Callable[[], None]:
        """Call ``callback(update)`` on balloonlab's background thread whenever something changes; returns
        unsubscribe.  Callbacks must be short, must not block and must not call lab methods synchronously."""
        return self._client.subscribe(callback)

    def reconnect(self, timeout: float = 5.0) -> None:
        """Connect again (QEMU restarted on the same socket); subscriptions, history and events carry over.

        The new connection is opened first; only when it works does it replace the current one, so a failed
        reconnect never costs a working connection."""
        if self._closed:
            raise BalloonDisconnectedError("this lab is closed; start a new one")
        cause = self._client.exit_cause_now()
        if cause is not None:
            raise BalloonDisconnectedError(f"{cause}; start a new one with balloonlab.launch()")
        if self.socket_path and not os.path.exists(self.socket_path):
            # Nothing to reconnect to: keep the connection we have (it is a file descriptor, not the path).
            kept = "; the current connection is kept" if self.connected else ""
            raise BalloonDisconnectedError(
                f"cannot connect to the QMP socket {self.socket_path}: it does not exist (is QEMU, or `balloonlab "
                f"emulate`, running?){kept}")
        try:
            self._run(self._client.reconnect(timeout=timeout), timeout + self.timeout)
        except BalloonDisconnectedError as exc:
            if not self.connected:
                raise
            raise BalloonDisconnectedError(
                f"{exc} The current connection is kept: it still works (a QEMU that serves one client per socket "
                "cannot greet a second connection while this one is open).") from None

    def record(self, path: str | os.PathLike[str], *, description: str = "") -> Recorder:
        """Record this lab to ``path`` (JSON Lines, gzip for ``*.gz``; docs/recordings.md) until ``rec.stop()``
        or ``lab.close()``: a header, every QMP exchange and event, every stats report."""
        if self._closed:
            raise BalloonDisconnectedError("this lab is closed; start a new one (balloonlab.emulate/connect/launch)")
        if self.backend == "libvirt":
            raise UnsupportedBackendError(
                "a recording is QEMU's QMP conversation; libvirt holds this VM's and would mark the domain tainted "
                "if balloonlab spoke QMP through it. Record a QMP lab (connect(path), launch(), emulate()).")
        rec = Recorder(self, path, description=description)
        self._recorders.append(rec)
        return rec

    @property
    def recorders(self) -> list[Recorder]:
        """The recorders recording this lab now (a failed one stays listed, with its ``error``, until stopped)."""
        return list(self._recorders)

    def _forget_recorder(self, rec: Recorder) -> None:
        with contextlib.suppress(ValueError):
            self._recorders.remove(rec)

    def close(self) -> None:
        """Stop recording, disconnect and stop what this lab started (emulator, QEMU).  Idempotent."""
        with self._close_lock:
            if self._closed:
                return
        for rec in list(self._recorders):
            rec.stop("lab closed")
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def __enter__(self) -> "Balloon":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # For magics, widgets and people ---------------------------------------------------------------------------
    @property
    def exclusive(self) -> bool:
        """False for ``connect(path, exclusive=False)``: the socket is held only during each call, so no events
        arrive and live views poll (``client/shared.py``)."""
        return getattr(self._client, "exclusive", True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        return not self._closed and self._client.connected

    @property
    def following(self) -> bool:
        """True while the background follower polls (someone subscribes or history records)."""
        return self._client.following

    @property
    def qemu_version(self) -> str | None:
        """From the QMP greeting, e.g. ``"7.2.22"``."""
        return self._client.qemu_version

    @property
    def running(self) -> bool:
        """Whether the VM runs (``query-status``)."""
        return bool(self._run(self._client.read_run_state()).get("running"))

    @property
    def devices(self) -> list[str]:
        """Every balloon device discovery found (``device_path`` is the first)."""
        return list(self._client.devices)

    @property
    def last_stats(self) -> GuestStats | None:
        """The most recent stats seen (by a call or the follower), without asking QEMU."""
        return self._client.last_stats

    @property
    def emulator(self) -> Any:
        """The in-process Emulator (emulated labs), else None."""
        return self._emulator

    @property
    def vm(self) -> Any:
        """The LiveVM (launched labs), else None."""
        return self._vm

    @property
    def run_state(self) -> RunState | None:
        """The VM's run state as ``query-status`` says it (``"running"``, ``"paused"``, ``"prelaunch"``...)."""
        return self._run(self._client.read_run_state()).get("status")

    def emulator_state(self) -> dict:
        """``x-balloonlab-status`` of an emulator: clock (``wall-clock``, ``vm-clock-ns``), guest model, and per
        device the stats queue holder, the feature words, device status and config space (see docs/emulator.md)."""
        self._require(STATUS, "emulator_state()")
        return self._run(self._client.execute(STATUS))

    def virtio(self) -> VirtioState:
        """The balloon's feature bits, device status and config space (emulated labs; a real QEMU shows its
        feature words with ``lab.qmp("x-query-virtio-status", path=lab.device_path + "/virtio-backend")``)."""
        self._require(STATUS, "virtio()")
        for device in self.emulator_state().get("devices", []):
            if device.get("path") == self.device_path:
                return VirtioState.from_status(device)
        raise UnsupportedBackendError(f"the emulator reports no virtio state for {self.device_path}")

    def info(self) -> dict:
        """A summary for ``%balloon info``: where, what, and the current settings."""
        return {
            "backend": self.backend, "socket_path": self.socket_path, "device_path": self.device_path,
            "devices": self.devices, "qemu_version": self.qemu_version, "ram_size": self.ram_size,
            "polling_interval": self.polling_interval, "actual": self.actual, "run_state": self.run_state,
            "virtual_clock": self._has(ADVANCE) and self._virtual_clock(), "following": self.following,
            "history_samples": len(self.history), "events": len(self._client.events_snapshot()),
        }

    def __repr__(self) -> str:
        if self._closed:
            return f"<Balloon {self.backend} (closed) {self._client.address}>"
        # The backend is a word ("emulated", "live", "connected"); the connection state is said only when it is
        # not the normal one, so a connected lab does not read "connected connected".
        state = "" if self._client.connected else " (disconnected)"
        ram = format_size(self._client.ram_size) if self._client.ram_size else "?"
        return (f"<Balloon {self.backend}{state} QEMU {self.qemu_version or '?'} RAM {ram} "
                f"{self.device_path} via {self._client.address}>")

    # Helpers ---------------------------------------------------------------------------------------------------
    def _require(self, command: str, what: str) -> None:
        if not self._has(command):
            raise UnsupportedBackendError(
                f"{what} needs an emulated lab (balloonlab.emulate() or `balloonlab emulate`); this {self.backend} "
                f"lab's QEMU has no {command} command")

    def _virtual_clock(self) -> bool:
        try:
            return self.emulator_state().get("clock") == "virtual"
        except (QMPError, UnsupportedBackendError):
            return False

    def _wall_now(self) -> float:
        """The clock last-update is on: the host's, except for an emulator on a virtual clock (its own)."""
        if not self._has(STATUS):
            return time.time()
        try:
            st = self.emulator_state()
        except QMPError:
            return time.time()
        if st.get("clock") != "virtual":
            return time.time()
        if isinstance(st.get("wall-clock"), (int, float)):
            return float(st["wall-clock"])
        if self._emulator is not None:  # in-process: ask the emulator's clock on its own (loop) thread
            emu = self._emulator

            async def read() -> float:
                return float(emu.clock.wall_time())

            return self._run(read())
        return time.time()


def _default_name(socket_path: str, backend: str) -> str:
    stem = os.path.splitext(os.path.basename(socket_path))[0]
    return "vm0" if backend == "emulated" or stem in ("", "qmp") else stem


def advance_replaying(labs: list[Balloon], seconds: float, advance: Callable[[float], None]) -> None:
    """Advance a virtual clock (``advance(step)``) in chunks no lab's emulator trace ring can overflow in, and after
    each chunk feed every report it produced, with its own time, to each lab's history and subscribers: a day at
    1 s is 86 400 reports, and a plot or a history should see each, not just the state at the end.  ``labs`` share
    the clock (one VM, or a host of them)."""
    started: list[tuple[Balloon, int]] = []
    try:
        chunk = float("inf")
        for lab in labs:
            cursor, longest = lab._run(lab._client.begin_replay())
            started.append((lab, cursor))
            chunk = min(chunk, longest)
        cursors = dict(started)
        left_ns = round(seconds * 1e9)
        chunk_ns = round(chunk * 1e9) if chunk != float("inf") else left_ns
        while True:
            step_ns = min(chunk_ns, left_ns)
            advance(step_ns / 1e9)
            for lab in labs:
                cursors[lab] = lab._run(lab._client.replay(cursors[lab]))
            left_ns -= step_ns
            if left_ns <= 0:
                break
    finally:
        for lab, _ in started:
            _loop.call_soon(lab._client.end_replay)


# Constructors --------------------------------------------------------------------------------------------------
def connect(path: str, *, domain: str | None = None, exclusive: bool = True, device_path: str | None = None,
            history: bool = True, timeout: float = 10.0) -> Balloon:
    """A lab on any QMP unix socket (a live QEMU, ``-qmp unix:PATH,server=on,wait=off``, or `balloonlab emulate`),
    or on a libvirt domain: ``connect("qemu:///system", domain="web1")`` (any libvirt URI, remote ones too).

    ``exclusive=False`` opens the socket for each call and releases it at once, for sockets the VM's manager uses
    too (Proxmox: ``/var/run/qemu-server/ID.qmp``); no events arrive then, see ``client/shared.py``.

    A socket that does not exist yet or refuses (a QEMU started a moment ago) is tried again for up to
    ``timeout`` seconds; then the error says why it failed.
    """
    path = str(path)
    if domain is not None or "://" in path:
        if domain is None:
            raise InvalidValueError(f"{path} is a libvirt URI: name the VM too, connect({path!r}, domain='NAME')")
        from .libvirt_client import LibvirtClient
        from .libvirt_host import LibvirtHost

        host = LibvirtHost.open(path, timeout=timeout)
        client: BalloonBackend = LibvirtClient(host, domain, owns_host=True, command_timeout=timeout)
        return Balloon(backend="libvirt", history=history, timeout=timeout, client=client, name=domain)
    if not exclusive:
        from .shared import SharedSocketClient

        shared = SharedSocketClient(path, device_path, command_timeout=timeout)
        return Balloon(path, backend="connected", history=history, timeout=timeout, client=shared)
    return Balloon(path, backend="connected", device_path=device_path, history=history, timeout=timeout)


def emulate(guest: GuestModel = "linux", memory: str | int = "512M", clock: ClockKind = "real",
            qemu_version: QemuVersion = "10.0",
            id: str | None = None, paused: bool = False, *, history: bool = True, seed: int = 0,
            guest_kernel: str | None = None, socket_path: str | None = None, timeout: float = 10.0,
            boot_delay: float = 0.05, free_page_reporting: bool = False, deflate_on_oom: bool = False,
            workload: str | RecordedCurve | None = None, single_client: bool = False) -> Balloon:
    """An emulated QEMU in this process (on balloonlab's background loop), reached over real QMP.

    Without ``id`` the balloon sits where QEMU's stats doc puts it (``/machine/peripheral-anon/device[1]``, the
    legacy ``-balloon virtio`` placement) so the doc's examples run verbatim; ``id="balloon0"`` puts it at
    ``/machine/peripheral/balloon0``.  ``memory``: ``"512M"``, ``"1G"`` or bytes (a bare number is bytes, as
    everywhere in the API; ``emulate(memory=512)`` is refused with "did you mean '512M'?").  ``guest_kernel`` (``"6.1"``
    or ``"6.12"``) picks the ``linux`` guest's kernel; None: the one observed with that QEMU (6.1 with 7.2, 6.12
    after), so ``emulate(qemu_version="7.2", guest_kernel="6.12")`` shows QEMU 7.2 ignoring tags >= 10.

    ``boot_delay`` is how long the emulated guest takes from power-on to its balloon driver's boot report (a real
    TCG boot takes seconds; ``balloonlab emulate`` models 1 s).  Like ``launch()``, which waits for its guest,
    ``emulate()`` returns once a running guest's boot report is there, so ``emulate().stats()`` has numbers.

    ``free_page_reporting`` and ``deflate_on_oom`` are the device's QOM properties of the same names (QEMU's
    ``-device virtio-balloon-pci,free-page-reporting=on,deflate-on-oom=on``): the feature bits follow them, and
    so does the guest (free memory goes back to the host; the balloon deflates instead of an OOM kill).
    ``workload`` runs one of the named workloads (``"diurnal"``...; see ``balloonlab.emulator.workloads``), or
    ``"recording:NAME_OR_PATH"``: a real guest's recorded appetite (docs/recordings.md).

    The emulator serves several QMP clients on ``lab.socket_path`` at once (qmp-shell can attach beside the lab);
    real QEMU serves one per socket.  ``single_client=True`` behaves as QEMU: while this lab is connected, another
    client connects but gets no greeting until the lab closes.
    """
    try:
        from ..emulator.config import machine_config
        from .replay import workload as read_workload
    except ImportError as exc:
        raise BalloonError(f"the emulator is not available in this installation: {exc}") from None
    config = machine_config(guest=guest, ram=parse_guest_size(memory, "memory"), clock=clock,
                            qemu_version=qemu_version, id=id, paused=paused, seed=seed, guest_kernel=guest_kernel,
                            boot_delay=boot_delay, free_page_reporting=free_page_reporting,
                            deflate_on_oom=deflate_on_oom, workload=read_workload(workload),
                            single_client=single_client)
    lab = start_emulated(config, socket_path=socket_path, history=history, timeout=timeout)
    if clock == "real" and not paused and guest != "nodriver":
        # A virtual clock already ran the boot inside start(); on the real one, wait for the boot report.
        deadline = time.monotonic() + boot_delay + 1.0
        try:
            while lab.stats().last_update is None and time.monotonic() < deadline:
                time.sleep(0.005)
        except BaseException:
            lab.close()
            raise
    return lab


def start_emulated(config: Any, *, socket_path: str | None = None, history: bool = True,
                   timeout: float = 10.0) -> Balloon:
    """Start an in-process emulator for ``config`` (an ``emulator.config.MachineConfig``) and return its lab
    (``emulate()`` and ``replay()`` build their configs, this starts them)."""
    from ..emulator import Emulator

    async def start() -> Any:
        emu = Emulator(config, socket_path)
        await emu.start()
        return emu

    emu = _loop.run_bounded(start(), timeout, f"the emulator did not start within {timeout:g} s (a busy machine? "
                            f"emulate(timeout=...) waits longer)", undo=lambda emu: emu.stop())
    # From here the lab owns the emulator: a failing constructor closes the lab, which stops it.
    return Balloon(emu.socket_path, backend="emulated", history=history, timeout=timeout, emulator=emu)


def launch(memory: str | int = "512M", *, history: bool = True, timeout: float = 10.0,
           free_page_reporting: bool = False, deflate_on_oom: bool = False, **options: Any) -> Balloon:
    """Boot ``qemu-system-x86_64`` (TCG) with balloonlab's tiny Linux guest and connect to it.

    ``options`` go to :meth:`balloonlab.live.launcher.LiveVM.start` (``balloon_id``, ``paused``, ``guest``,
    ``accel``, ``extra_args``, ``image``, ``workdir``, ``timeout``...).  ``free_page_reporting`` and
    ``deflate_on_oom`` set the device's properties of those names.  ``close()`` stops QEMU again.
    """
    try:
        from ..live.launcher import LiveVM
    except ImportError as exc:
        raise BalloonError(f"the live launcher is not available in this installation: {exc}") from None
    options["balloon_options"] = _balloon_options(
        {"free-page-reporting": free_page_reporting, "deflate-on-oom": deflate_on_oom},
        options.get("balloon_options"))
    vm = LiveVM.start(memory=memory, **options)
    return Balloon(vm.qmp_socket, backend="live", history=history, timeout=timeout, vm=vm)  # owns vm from here


def _balloon_options(flags: dict[str, bool], given: Any) -> dict[str, Any]:
    """``launch()``'s device properties: ``balloon_options`` plus the keyword flags that are on.  A property set
    both ways is refused rather than one silently winning."""
    options = dict(given or {})
    for name, on in flags.items():
        if not on:
            continue
        if name in options and options[name] not in (True, "on"):
            keyword = name.replace("-", "_")
            raise LaunchError(f"{keyword}=True and balloon_options={{{name!r}: {options[name]!r}}} disagree; "
                              f"set {name} one way, in one place")
        options[name] = True
    return options


__all__ = ["Balloon", "LabUpdate", "VirtioState", "connect", "emulate", "launch"]
