"""``Host``: many emulated VMs sharing one host's memory, each a full lab (``balloonlab.emulate_host``).

    host = balloonlab.emulate_host(memory="3G", vms=4, vm_memory="1G", workloads="mixed")
    host.vms                   # [Balloon "vm0", ...]: every lab feature, each on its own QMP socket
    host["vm1"].set_target("512M")
    host.advance("1h")         # one virtual clock for the host and every VM
    host.usage()               # HostUsage: total, used, free, swap_used, rss per VM
    host.close()

The VMs and the host's memory model live on balloonlab's background loop (``emulator/host.py``); this facade runs
each call there and waits, like :class:`~balloonlab.client.balloon.Balloon` does.
"""

from __future__ import annotations

import difflib
import functools
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, TypeVar

from . import loop as _loop
from .balloon import Balloon, advance_replaying
from ..errors import BalloonDisconnectedError, EmulatorOptionError, UnknownVMError, VirtualClockRequiredError
from ..units import format_size, parse_duration, parse_guest_size, parse_size

if TYPE_CHECKING:
    from ..emulator.config import ClockKind, GuestModel, QemuVersion
    from ..emulator.host import EmulatedHost, HostSnapshot, VMReading
    from ..emulator.workloads import RecordedCurve

T = TypeVar("T")


@dataclass(frozen=True)
class HostUsage:
    """The host's memory at one moment, in bytes: RAM ``total``, ``used`` by the VMs' QEMU processes (the sum of
    ``rss``), ``free``, and the ``swap_used`` the VMs overflowed into.  ``rss`` and ``swapped`` by VM name."""

    total: int
    used: int
    free: int
    swap_used: int
    swap_total: int
    rss: dict[str, int] = field(default_factory=dict)
    swapped: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        vms = ", ".join(f"{n} {format_size(v)}" for n, v in self.rss.items())
        return (f"host {format_size(self.total)}: used {format_size(self.used)}, free {format_size(self.free)}, "
                f"swap {format_size(self.swap_used)} of {format_size(self.swap_total)} ({vms})")


def subscribe_labs(labs: list[Balloon], callback: Callable[[str, Any], None]) -> Callable[[], None]:
    """``callback(name, update)`` for every update of these labs (a host's, a fleet's); returns unsubscribe."""
    def forward(name: str) -> Callable[[Any], None]:
        return lambda update: callback(name, update)

    unsubs = [lab.subscribe(forward(lab.name)) for lab in labs]

    def unsubscribe() -> None:
        for u in unsubs:
            u()

    return unsubscribe


def _stop_host(emulated: Any, labs: list[Balloon], timeout: float) -> None:
    """Close every lab, then stop the host's VMs.  Must not reference the Host (it runs from its finalizer)."""
    for lab in labs:
        lab.close()
    if _loop.in_loop_thread():
        _loop.spawn(emulated.stop(), "balloonlab-host-stop")
        return
    try:
        _loop.run_to_end(emulated.stop(), timeout)
    except Exception:  # the VMs' own labs already stopped them
        pass


def _record_quit(labs: dict[str, Balloon], quit: list[Balloon], name: str) -> None:
    """EmulatedHost.on_vm_stopped, on the loop: the VM called ``name`` now is the one that quit (a name is
    re-used only once its VM is gone, emulator/host.py)."""
    lab = labs.get(name)
    if lab is not None:
        quit.append(lab)


class Host:
    """A host of emulated VMs (see the module docstring).  Build it with :func:`emulate_host`."""

    def __init__(self, emulated: EmulatedHost, *, guest: GuestModel, qemu_version: QemuVersion,
                 free_page_reporting: bool,
                 deflate_on_oom: bool, seed: int, timeout: float, history: bool = False) -> None:
        self._host = emulated
        self._guest: GuestModel = guest
        self._qemu_version: QemuVersion = qemu_version
        self._free_page_reporting = free_page_reporting
        self._deflate_on_oom = deflate_on_oom
        self._seed = seed
        self.timeout = timeout
        self._history = history
        self._labs: dict[str, Balloon] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_host, emulated, [], timeout)
        #: the labs whose VM a client stopped with QMP ``quit``, oldest first: by identity, for a VM re-added
        #: under the same name is another VM (bound to the dict and list, not to self: the finalizer must fire)
        self._quit: list[Balloon] = []
        emulated.on_vm_stopped = functools.partial(_record_quit, self._labs, self._quit)

    # The surface of issue 12 ------------------------------------------------------------------------------------
    @property
    def vms(self) -> list[Balloon]:
        """Every running VM's lab, in the order they were added (``"vm0"``, ``"vm1"``, ...); a VM closed, or
        stopped with QMP ``quit`` (:meth:`stopped_vms`), has left."""
        return [lab for lab in self._labs.values() if not lab.closed and not any(lab is q for q in self._quit)]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.vms]

    def __getitem__(self, name: str) -> Balloon:
        lab = self._labs.get(name)
        if lab is None or lab not in self.vms:
            near = difflib.get_close_matches(str(name), self.names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UnknownVMError(f"no VM named {name!r} on this host (it has {', '.join(self.names) or 'none'})"
                                 f"{hint}")
        return lab

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[Balloon]:
        return iter(self.vms)

    def __len__(self) -> int:
        return len(self.vms)

    @property
    def memory(self) -> int:
        """Bytes of host RAM."""
        return int(self._host.memory)

    @property
    def clock(self) -> ClockKind:
        """``"virtual"`` (time moves in :meth:`advance`) or ``"real"``."""
        return self._host.mode

    def add_vm(self, memory: str | int = "1G", name: str | None = None, guest: GuestModel | None = None,
               free_page_reporting: bool | None = None, deflate_on_oom: bool | None = None, *,
               workload: str | RecordedCurve | None = None, qemu_version: QemuVersion | None = None) -> Balloon:
        """Start one more VM on this host (an emulated QEMU with its own QMP socket) and return its lab.  None:
        the host's defaults (those given to :func:`emulate_host`).  ``workload``: a name
        (``balloonlab.emulator.workloads``) or ``"recording:NAME_OR_PATH"``, a real guest's recorded appetite."""
        from ..emulator.config import machine_config
        from .replay import workload as read_workload

        self._check_open()
        ram = parse_guest_size(memory, "VM memory")
        with self._lock:
            name = name or self._free_name()
            previous = self._labs.get(name)
            if previous is not None and previous in self.vms:
                raise EmulatorOptionError(f"a VM named {name!r} is already on this host; choose another name")
            if previous is not None:  # its VM quit or its lab was closed: the name is free, the old lab goes
                previous.close()
            seed = self._seed * 1000 + len(self._labs)
            config = machine_config(
                guest=guest or self._guest, ram=ram, clock=self.clock, qemu_version=qemu_version or self._qemu_version,
                id="balloon0", seed=seed, workload=read_workload(workload),
                free_page_reporting=self._free_page_reporting if free_page_reporting is None else free_page_reporting,
                deflate_on_oom=self._deflate_on_oom if deflate_on_oom is None else deflate_on_oom)
            emu = self._run(self._host.add_vm(name, config), undo=lambda emu: emu.stop())
            try:
                lab = Balloon(emu.socket_path, backend="emulated", timeout=self.timeout, emulator=emu, name=name,
                              history=self._history)
            except BaseException:
                _loop.run_to_end(emu.stop(), self.timeout)
                raise
            lab._host = weakref.ref(self)  # its advance() moves the whole host, one path (Host.advance)
            self._labs[name] = lab
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _stop_host, self._host, list(self._labs.values()),
                                               self.timeout)
        return lab

    def _free_name(self) -> str:
        i = len(self._labs)
        while f"vm{i}" in self._labs:
            i += 1
        return f"vm{i}"

    def usage(self) -> HostUsage:
        """The host's memory now: what each VM's QEMU holds, what is free, what went to swap."""
        self._check_open()

        async def read() -> Any:
            return self._host.snapshot()

        return _usage_of(self._run(read()))

    def observe(self) -> tuple[HostUsage, dict[str, VMReading]]:
        """The host's usage and, per VM name, what a manager reads about it (guest stats as ``qom-get`` answers,
        ``actual``, RAM, RSS), all at one instant in one call: what a policy tick needs (balloonlab.policy)."""
        self._check_open()

        async def read() -> Any:
            return self._host.observe()

        snap, readings = self._run(read())
        return _usage_of(snap), readings

    def step(self, duration: str | float, *, notify: bool = True) -> tuple[HostUsage, dict[str, VMReading]]:
        """:meth:`advance`, then :meth:`observe`: a policy run's tick (balloonlab.policy).

        ``notify=False``: in one call to the loop, without telling the VMs' followers (history, panels, watches);
        they catch up at the next :meth:`advance`.  A simulated policy run ticks this way, a day in seconds, and
        keeps its own record of the day (replaying each report to every lab's history costs several QMP round
        trips per VM and tick).
        """
        self._check_open()
        seconds = parse_duration(duration)
        if notify or self.clock != "virtual":
            self.advance(seconds)
            return self.observe()

        async def run() -> Any:
            self._host.advance(seconds)
            return self._host.observe()

        snap, readings = self._run(run(), max(self.timeout, 60 + seconds / 360))
        return _usage_of(snap), readings

    def advance(self, duration: str | float) -> None:
        """Move the host's virtual clock, and every VM's with it (``"1h"``, ``"30s"``, seconds)."""
        self._check_open()
        if self.clock != "virtual":
            raise VirtualClockRequiredError("advance() needs a host on the virtual clock: "
                                            "balloonlab.emulate_host(clock='virtual')")
        seconds = parse_duration(duration)

        def advance(step: float) -> None:
            async def run() -> None:
                self._host.advance(step)

            # a day of 100 VMs is seconds of CPU: wait for it rather than time out
            self._run(run(), max(self.timeout, 60 + step / 360))

        watched = [lab for lab in self.vms if lab.wants_replay]
        if watched:  # a panel or a history sees every report, as after Balloon.advance
            advance_replaying(watched, seconds, advance)
        else:
            advance(seconds)
        for lab in self.vms:  # their followers read the new state
            _loop.call_soon(lab._client._poke)

    def wall_time(self) -> float:
        """The host's wall clock in seconds since the epoch (virtual on a virtual clock): every VM's
        ``last-update`` is on it, so the doctor judges ages against it."""
        self._check_open()

        async def read() -> float:
            return float(self._host.wall_time())

        return self._run(read())

    def stopped_vms(self) -> list[str]:
        """Names of the VMs that stopped by themselves (a QMP ``quit``), oldest first."""
        return [lab.name for lab in self._quit]

    def subscribe_vms(self, callback: Callable[[str, Any], None]) -> Callable[[], None]:
        """``callback(name, update)`` for every VM's lab updates (see ``Balloon.subscribe``); returns unsubscribe."""
        return subscribe_labs(self.vms, callback)

    def close(self) -> None:
        """Close every VM's lab and stop the VMs.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.vms)} VMs"
        return f"<Host {format_size(self.memory)} {state} clock={self.clock}>"

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None, *,
             undo: Callable[[T], Awaitable[Any]] | None = None) -> T:
        """One call on the background loop, as :meth:`Balloon._run <balloonlab.client.balloon.Balloon._run>`: a
        host that does not answer in time raises BalloonDisconnectedError (``undo``: client/loop.py run)."""
        timeout = self.timeout if timeout is None else timeout
        return _loop.run_bounded(coro, timeout, f"the emulated host did not answer within {timeout:g} s (a busy "
                                 f"machine? emulate_host(timeout=...) waits longer)", undo=undo)

    def _check_open(self) -> None:
        if self._closed:
            raise BalloonDisconnectedError("this host is closed; start a new one with balloonlab.emulate_host()")


def _usage_of(snap: HostSnapshot) -> HostUsage:
    return HostUsage(total=snap.total, used=snap.used, free=snap.free, swap_used=snap.swap_used,
                     swap_total=snap.swap_total, rss=dict(snap.rss), swapped=dict(snap.swapped))


def emulate_host(memory: str | int = "3G", vms: int = 4, vm_memory: str | int = "1G", guest: GuestModel = "linux",
                 clock: ClockKind = "virtual", free_page_reporting: bool = False, deflate_on_oom: bool = False,
                 qemu_version: QemuVersion = "10.0", workloads: str | Mapping[str, str] | None = None,
                 seed: int = 0, *,
                 swap: str | int | None = None, timeout: float = 10.0, history: bool = False) -> Host:
    """A host with ``memory`` of RAM running ``vms`` emulated VMs of ``vm_memory`` each, named ``vm0``...

    ``workloads``: None (idle), one name for all (``"diurnal"``), ``"mixed"`` (a varied seeded set) or a dict
    ``{"vm0": "leak"}``; names in ``balloonlab.emulator.workloads``.  ``"recording:NAME_OR_PATH"`` (for one VM
    or all) makes a real guest's recorded appetite that VM's workload (``balloonlab.recordings()``; scaled to the
    VM's RAM and looping: docs/recordings.md).  ``swap``: the host's swap (default half its
    RAM).  Every VM is deterministic by ``seed`` on the virtual clock.

    ``history``: whether each VM's lab records its reports (a single lab does by default; a host's VMs do not,
    because a simulated day of 20 VMs at 1 s is 1.7 million reports that a policy run or the fleet panel never
    reads).  Turn it on for the whole host here, or for one VM with ``host["vm1"].history.enabled = True``.
    """
    from ..emulator.host import EmulatedHost
    from ..emulator.workloads import assign
    from .replay import recorded_workload

    host_ram = parse_guest_size(memory, "host memory")
    swap_bytes = host_ram // 2 if swap is None else parse_size(swap)
    if not isinstance(vms, int) or isinstance(vms, bool) or vms < 0:
        raise EmulatorOptionError(f"vms is how many VMs to start: a whole number >= 0, not {vms!r}")
    if clock not in ("real", "virtual"):
        raise EmulatorOptionError(f"unknown clock {clock!r}; choose one of real, virtual")
    names = [f"vm{i}" for i in range(vms)]
    try:
        plan = assign(dict(workloads) if isinstance(workloads, Mapping) else workloads, names, seed,
                      recorded_workload)
        emulated = EmulatedHost(host_ram, swap_bytes, clock)
    except ValueError as exc:
        raise EmulatorOptionError(str(exc)) from None
    host = Host(emulated, guest=guest, qemu_version=qemu_version, free_page_reporting=free_page_reporting,
                deflate_on_oom=deflate_on_oom, seed=seed, timeout=timeout, history=history)
    try:
        for name in names:
            host.add_vm(vm_memory, name=name, workload=plan[name])
        if clock == "real":  # as emulate() does: return once every guest's boot report is there
            _wait_for_boot_reports(host.vms)
    except BaseException:
        host.close()
        raise
    return host


def _wait_for_boot_reports(labs: list[Balloon], limit: float = 2.0) -> None:
    deadline = time.monotonic() + limit
    for lab in labs:
        while lab.stats().last_update is None and time.monotonic() < deadline:
            time.sleep(0.005)


__all__ = ["Host", "HostUsage", "emulate_host"]
