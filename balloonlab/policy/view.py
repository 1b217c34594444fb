"""What a policy sees at each tick: the host's memory and, per VM, its guest stats, balloon and host cost.

The same view is built from an emulated host (one read of its model per tick, ``Host.observe``) or from real VMs
(QMP per VM, ``/proc/meminfo`` for the host): a policy cannot tell which, so what it learns on a simulated day is
what it will do on real VMs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..stats import UNSET, GuestStats

_NO_REPORT: dict = {"stats": {}, "last-update": 0}


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


class VMView:
    """One VM: its guest's latest ``stats``, the balloon's ``actual`` (RAM minus the balloon), its ``ram``, the
    ``rss`` its QEMU holds on the host (None where it cannot be read) and the ``target`` last set (None: never,
    i.e. the whole RAM).

    From an emulated host the view holds the ``guest-stats`` wire dict and builds :class:`GuestStats` only when
    ``stats`` is read: :meth:`stat` and the shortcuts read the wire dict directly, which keeps a day of 20 VMs
    from spending seconds parsing reports nobody looks at (docs/benchmarks.md).
    """

    __slots__ = ("name", "actual", "ram", "rss", "target", "_stats", "_raw")

    def __init__(self, name: str, actual: int, ram: int, rss: int | None, target: int | None, *,
                 stats: GuestStats | None = None, raw: dict | None = None) -> None:
        self.name = name
        self.actual = actual
        self.ram = ram
        self.rss = rss
        self.target = target
        self._stats = stats
        self._raw = raw if stats is None else None

    @property
    def stats(self) -> GuestStats:
        """The guest's latest report (empty before the first one)."""
        if self._stats is None:
            self._stats = GuestStats(self._raw if self._raw is not None else _NO_REPORT)
        return self._stats

    def stat(self, key: str) -> int | None:
        """One statistic by QEMU's name without ``stat-`` (``"free-memory"``), None when unset or unreported."""
        if self._stats is not None or self._raw is None:
            return self.stats.get(key)
        value = self._raw["stats"].get("stat-" + key)
        return None if value is None or value == UNSET else int(value)

    @property
    def valid(self) -> bool:
        """Whether the guest has reported (a driver that never answered leaves ``last-update`` at 0): MoM and
        Proxmox leave such guests alone."""
        if self._stats is None and self._raw is not None:
            reported = bool(self._raw.get("last-update"))
        else:
            reported = self.stats.last_update is not None
        return reported and self.stat("free-memory") is not None

    @property
    def free(self) -> int | None:
        """The guest's free memory (``free-memory``), or None before its first report."""
        return self.stat("free-memory")

    @property
    def available(self) -> int | None:
        """``available-memory`` (what the guest could use without swapping), else ``free-memory``."""
        value = self.stat("available-memory")
        return value if value is not None else self.free

    @property
    def used(self) -> int | None:
        """Memory the guest has in use: its balloon size (``actual``) less what it could still use."""
        avail = self.available
        return None if avail is None else max(0, self.actual - avail)

    def __repr__(self) -> str:
        return (f"VMView({self.name!r}, actual={self.actual}, ram={self.ram}, rss={self.rss}, "
                f"target={self.target}, free={self.free})")


@dataclass(frozen=True)
class View:
    """Everything a policy gets at one tick: ``tick`` (0, 1, ...), ``time`` (seconds since the run began),
    ``host`` and ``vms`` by name."""

    tick: int
    time: float
    host: HostView
    vms: Mapping[str, VMView]
