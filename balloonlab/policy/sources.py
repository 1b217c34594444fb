"""Where a run reads its views and sends its targets: an emulated host (one read of its model per tick) or a set of
labs (QMP per VM, this machine's ``/proc/meminfo`` for the host), or a libvirt fleet (its labs, and its hosts' own
memory from libvirt).  Each gives the policy the same :class:`View`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..client.balloon import Balloon
from ..client.fleet import Fleet
from ..client.host import Host, HostUsage
from ..errors import BalloonError, InvalidValueError
from .view import HostView, View, VMView

if TYPE_CHECKING:
    from ..emulator.host import VMReading

class Source:
    """The VMs a run manages: their labs by name, a view of them now, and the clock (virtual or real)."""

    labs: dict[str, Balloon]
    virtual: bool = False

    def view(self, tick: int, time: float) -> View:
        raise NotImplementedError

    def usage(self) -> HostUsage | None:
        """The host's usage at the last view (None where the host is not modelled)."""
        return None

    def advance(self, seconds: float) -> None:
        raise NotImplementedError("only an emulated host on the virtual clock can advance")

    def finish(self) -> None:
        """Run any time advanced but not yet run (the end of a simulated run)."""

    def ensure_polling(self, interval: int) -> None:
        """Turn the guests' stats polling on where it is off (a policy needs stats)."""
        for lab in self.labs.values():
            if lab.polling_interval == 0:
                lab.polling_interval = interval


class HostSource(Source):
    """An emulated :class:`~balloonlab.client.host.Host`: every VM's reading in one call per tick."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.labs = {lab.name: lab for lab in host.vms}
        self.virtual = host.clock == "virtual"
        self._usage: HostUsage | None = None
        self._pending = 0.0  # seconds advanced but not yet run: the next view runs them (Host.step)

    def ensure_polling(self, interval: int) -> None:
        # a simulated day polls at the tick: the policy sees fresh stats at each decision
        for lab in self.labs.values():
            if lab.polling_interval != interval:
                lab.polling_interval = interval

    def view(self, tick: int, time: float) -> View:
        if self._pending:
            usage, readings = self.host.step(self._pending, notify=False)
            self._pending = 0.0
        else:
            usage, readings = self.host.observe()
        self._usage = usage
        vms = {name: self._vm(name, r) for name, r in readings.items() if name in self.labs}
        host = HostView(memory=usage.total, free=usage.free, used=usage.used, swap_used=usage.swap_used)
        return View(tick=tick, time=time, host=host, vms=vms)

    def _vm(self, name: str, r: VMReading) -> VMView:
        return VMView(name, r.actual, r.ram, r.rss, self.labs[name].target, raw=r.guest_stats)

    def usage(self) -> HostUsage | None:
        return self._usage

    def advance(self, seconds: float) -> None:
        self._pending += seconds

    def finish(self) -> None:
        # also tells the labs' followers (history, panels), which the ticks did not: they catch up with the end
        if self.host.closed:
            return
        self.host.advance(self._pending)
        self._pending = 0.0


class FleetSource(Source):
    """Labs of any kind (launched QEMU, connected, emulated, libvirt): read over QMP, one VM after another; the
    host is this machine (``/proc/meminfo``), where launched VMs run."""

    def __init__(self, labs: Iterable[Balloon]) -> None:
        self.labs = {}
        for lab in labs:
            if not isinstance(lab, Balloon):
                raise InvalidValueError(f"a fleet is a list of labs (balloonlab.launch(), connect(), ...), "
                                        f"not {type(lab).__name__}")
            if lab.name in self.labs:
                raise InvalidValueError(f"two labs are named {lab.name!r}; give each VM its own name")
            self.labs[lab.name] = lab
        if not self.labs:
            raise InvalidValueError("the fleet is empty: give run() at least one lab")

    def view(self, tick: int, time: float) -> View:
        vms = {}
        for name, lab in self.labs.items():
            try:
                rss: int | None = lab.host_rss
            except BalloonError:
                rss = None
            actual = lab.actual
            # a QEMU that did not say its RAM size: its balloon at rest is the best guess
            vms[name] = VMView(name, actual, lab.ram_size or actual, rss, lab.target, stats=lab.stats())
        return View(tick=tick, time=time, host=self._host(), vms=vms)

    def _host(self) -> HostView:
        return _this_host()


class LibvirtFleetSource(FleetSource):
    """A libvirt fleet (``balloonlab.fleet``): its labs read as any labs, but the host is the fleet's own hosts as
    libvirt's node memory stats report them (``Fleet.usage()``), not this machine: a fleet's hosts may be remote."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet.vms)
        self.fleet = fleet
        self._usage: HostUsage | None = None

    def _host(self) -> HostView:
        usage = self._usage = self.fleet.usage()
        return HostView(memory=usage.total, free=usage.free, used=usage.used, swap_used=usage.swap_used)

    def usage(self) -> HostUsage | None:
        return self._usage


def _this_host() -> HostView:
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    total = info["MemTotal"]
    free = info.get("MemAvailable", info["MemFree"])
    return HostView(memory=total, free=free, used=total - free,
                    swap_used=info.get("SwapTotal", 0) - info.get("SwapFree", 0))


def source_for(target: object) -> Source:
    """The source for what ``run`` was given: a Host, a libvirt Fleet, one lab, or an iterable of labs."""
    if isinstance(target, Host):
        return HostSource(target)
    if isinstance(target, Fleet):
        return LibvirtFleetSource(target)
    if isinstance(target, Balloon):
        return FleetSource([target])
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
        return FleetSource(list(target))
    raise InvalidValueError("run() needs a host (balloonlab.emulate_host), a fleet (balloonlab.fleet), a lab or a "
                            f"list of labs, not {type(target).__name__}")


def polling_interval_for(tick: float) -> int:
    """Stats polling for a tick: whole seconds, at least 1 (QEMU's property is int64 seconds)."""
    return max(1, math.ceil(tick))
