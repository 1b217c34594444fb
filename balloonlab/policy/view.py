"""What a policy sees at each tick: the host's memory and, per VM, its guest stats, balloon and host cost.

The same view is built from an emulated host (one read of its model per tick, ``Host.observe``) or from real VMs
(QMP per VM, ``/proc/meminfo`` for the host): a policy cannot tell which, so what it learns on a simulated day is
what it will do on real VMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..stats import GuestStats


@dataclass(frozen=True)
class HostView:
    """The host's RAM (``memory``), what the VMs' QEMU processes hold (``used``), what is ``free``, and the
    ``swap_used`` that did not fit (bytes)."""

    memory: int
    free: int
    used: int
    swap_used: int

    @property
    def free_fraction(self) -> float:
        """``free / memory``: MoM's ``host_free_percent``."""
        return self.free / self.memory if self.memory else 0.0


@dataclass(frozen=True)
class VMView:
    """One VM: its guest's latest ``stats``, the balloon's ``actual`` (RAM minus the balloon), its ``ram``, the
    ``rss`` its QEMU holds on the host (None where it cannot be read) and the ``target`` last set (None: never,
    i.e. the whole RAM)."""

    name: str
    stats: GuestStats
    actual: int
    ram: int
    rss: int | None
    target: int | None

    @property
    def valid(self) -> bool:
        """Whether the guest has reported (a driver that never answered leaves ``last-update`` at 0): MoM and
        Proxmox leave such guests alone."""
        return self.stats.last_update is not None and self.stats.get("free-memory") is not None

    @property
    def free(self) -> int | None:
        """The guest's free memory (``free-memory``), or None before its first report."""
        return self.stats.get("free-memory")

    @property
    def available(self) -> int | None:
        """``available-memory`` (what the guest could use without swapping), else ``free-memory``."""
        value = self.stats.get("available-memory")
        return value if value is not None else self.free

    @property
    def used(self) -> int | None:
        """Memory the guest has in use: its balloon size (``actual``) less what it could still use."""
        avail = self.available
        return None if avail is None else max(0, self.actual - avail)


@dataclass(frozen=True)
class View:
    """Everything a policy gets at one tick: ``tick`` (0, 1, ...), ``time`` (seconds since the run began),
    ``host`` and ``vms`` by name."""

    tick: int
    time: float
    host: HostView
    vms: Mapping[str, VMView]
