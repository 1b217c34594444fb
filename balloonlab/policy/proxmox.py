"""Proxmox VE's automatic ballooning (pvestatd with ``PVE::AutoBalloon``; spec section D), as a :class:`Policy`."""

from __future__ import annotations

from collections.abc import Mapping

from ..units import parse_size
from .base import Policy
from .view import View, VMView

MiB = 1 << 20
GiB = 1 << 30


class ProxmoxPolicy(Policy):
    """Proxmox's rules, evaluated every tick (pvestatd runs every 10 s).

    Reproduced:

    * the goal is to keep the host's used memory at ``target`` (80 %, Proxmox's ``ballooning-target``) of its
      RAM: ``goal = memory * target - used`` bytes to hand out (or, negative, to take back); a goal within
      10 MiB of zero does nothing;
    * growing, VMs under memory pressure (less than ``pressure_free``, 1 GiB, free in the guest) go first, then
      all; shrinking, VMs whose free memory exceeds 25 % of their minimum (and whose balloon is not below it) go
      first, then all;
    * the memory is shared by ``shares`` (default 1000 each; 0 = never ballooned): each VM's desired size is its
      minimum plus its share of what is allocated above the minimums plus the goal, within [minimum, RAM];
    * no VM moves more than ``max_change`` (100 MiB) per tick, none goes below its ``minimum``; targets are
      rounded down to whole MiB;
    * VMs whose guest has not reported are left alone.

    Left out: the ``lock: migrate`` exclusion and Proxmox's own host accounting (``used`` here is what the VMs'
    QEMU processes hold).  Proxmox's default minimum is the VM's whole RAM (no ballooning); here it is
    ``minimum`` (a quarter of each VM's RAM unless given).
    """

    name = "ProxmoxPolicy"

    def __init__(self, target: float = 0.80, max_change: str | int = 100 * MiB,
                 minimum: str | int | float | Mapping[str, str | int] = 0.25,
                 shares: Mapping[str, int] | None = None, pressure_free: str | int = GiB) -> None:
        if not 0 < target <= 1:
            raise ValueError(f"target is a fraction of the host's RAM, 0 < target <= 1, not {target!r}")
        self.target = target
        self.max_change_bytes = _size(max_change)
        self.minimum = minimum
        self.shares = dict(shares or {})
        self.pressure_free = _size(pressure_free)

    def max_change(self, vm: VMView) -> int | None:
        return self.max_change_bytes

    def minimum_of(self, vm: VMView) -> int:
        """The VM's balloon minimum in bytes (Proxmox's ``balloon`` option)."""
        spec = self.minimum
        if isinstance(spec, Mapping):
            spec = spec.get(vm.name, 0.25)
        if isinstance(spec, float):
            return int(vm.ram * spec) // MiB * MiB
        return _size(spec)

    def decide(self, view: View) -> Mapping[str, int]:
        goal = int(view.host.memory * self.target - view.host.used)
        vms = {n: v for n, v in view.vms.items()
               if v.valid and v.actual > 0 and self.shares.get(n, 1000) != 0 and self.minimum_of(v) > 0}
        pressured, roomy = [], []
        for name, vm in vms.items():
            free = vm.free or 0
            minimum = self.minimum_of(vm)
            if free > minimum * 0.25 and vm.actual >= minimum:
                roomy.append(name)
            elif free < self.pressure_free:
                pressured.append(name)
        result: dict[str, int] = {}
        if goal > 10 * MiB:
            if self._share_out(vms, pressured, goal, result) >= goal:
                self._share_out(vms, list(vms), goal, result)
        elif goal < -10 * MiB:
            if self._share_out(vms, roomy, goal, result) <= goal:
                self._share_out(vms, list(vms), goal, result)
        return {n: t // MiB * MiB for n, t in result.items() if t // MiB * MiB != vms[n].actual}

    def _share_out(self, vms: Mapping[str, VMView], names: list[str], amount: int, result: dict[str, int]) -> int:
        """Move ``amount`` bytes (negative: take) across ``names`` by shares; returns what could not be moved."""
        rest = amount
        settled: set[str] = set()
        repeat = progress = True
        while rest and repeat and progress:
            repeat = progress = False
            active = [n for n in names if n not in settled]
            if not active:
                break
            allocated = sum(result.get(n, vms[n].actual) - self.minimum_of(vms[n]) for n in active)
            total_shares = sum(self.shares.get(n, 1000) for n in active)
            pool = allocated + rest
            for n in active:
                vm = vms[n]
                minimum = self.minimum_of(vm)
                desired = minimum + int(pool / total_shares * self.shares.get(n, 1000))
                if desired > vm.ram or desired < minimum:
                    desired = min(vm.ram, max(minimum, desired))
                    settled.add(n)
                    repeat = True
                if amount > 0:
                    new = max(vm.actual, min(vm.actual + self.max_change_bytes, desired))
                else:
                    new = min(vm.actual, max(vm.actual - self.max_change_bytes, desired))
                diff = new - result.get(n, vm.actual)
                if diff:
                    result[n] = new
                    rest -= diff
                    progress = True
        return rest


def _size(value: str | int | float) -> int:
    return parse_size(value) if isinstance(value, str) else int(value)
