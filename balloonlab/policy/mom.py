"""oVirt MoM's default balloon policy (its ``balloon.rules``; spec section D), as a :class:`Policy`."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from .base import Policy
from .view import View, VMView


class MomPolicy(Policy):
    """The rules of MoM's default balloon policy, evaluated every tick (MoM's ``policy-engine-interval``, 10 s).

    Reproduced:

    * the host is under pressure when its free memory is below ``pressure_threshold`` (20 %) of its RAM;
    * under pressure every guest shrinks toward what it uses plus a free reserve: ``min_guest_free_percent``
      (20 %) of its balloon scaled by ``host free / pressure_threshold``; when pressure is critical (free below
      ``pressure_critical``, 5 %) the reserve turns negative (``host free - 5 %``), forcing guests to swap;
    * a guest's use is MoM's ``StatAvg(balloon_cur) - StatAvg(mem_unused)``: ``actual`` less ``free-memory``,
      each averaged over the last ``samples`` ticks (MoM's sample history);
    * no step shrinks a guest by more than ``max_change_percent`` (5 %) of its balloon, and a shrink smaller than
      ``min_change_percent`` (0.25 %) is not worth a command;
    * without pressure every guest grows by 5 % of its balloon per tick, up to its RAM (MoM's ``balloon_max``);
    * guests that have not reported stats are skipped.

    Left out: MoM's other controllers (KSM, CPU tune), its per-guest ``balloon_min`` from the engine (here:
    nothing below ``floor`` bytes), and its host-side ``mem_free + cached`` (the host here has no page cache:
    free is what the VMs' QEMU processes leave).
    """

    name = "MomPolicy"

    def __init__(self, pressure_threshold: float = 0.20, pressure_critical: float = 0.05,
                 min_guest_free_percent: float = 0.20, max_change_percent: float = 0.05,
                 min_change_percent: float = 0.0025, samples: int = 10, floor: int = 0) -> None:
        if not 0 < pressure_critical <= pressure_threshold < 1:
            raise ValueError("need 0 < pressure_critical <= pressure_threshold < 1, e.g. 0.05 and 0.20")
        if samples < 1:
            raise ValueError(f"samples is how many ticks to average over: 1 or more, not {samples}")
        self.pressure_threshold = pressure_threshold
        self.pressure_critical = pressure_critical
        self.min_guest_free_percent = min_guest_free_percent
        self.max_change_percent = max_change_percent
        self.min_change_percent = min_change_percent
        self.samples = samples
        self.floor = floor
        self._history: dict[str, deque[tuple[int, int]]] = {}

    def reset(self) -> None:
        self._history = {}

    def max_change(self, vm: VMView) -> int | None:
        # the largest step either branch takes: 5 % of the balloon
        return int(vm.actual * self.max_change_percent) + 1

    def decide(self, view: View) -> Mapping[str, int]:
        host_free = view.host.free_fraction
        pressure = host_free < self.pressure_threshold
        if host_free <= self.pressure_critical:
            guest_free_percent = host_free - 0.05
        else:
            guest_free_percent = self.min_guest_free_percent * host_free / self.pressure_threshold
        targets: dict[str, int] = {}
        for name, vm in view.vms.items():
            if not vm.valid or vm.free is None:
                continue
            history = self._history.setdefault(name, deque(maxlen=self.samples))
            history.append((vm.actual, vm.free))
            cur = vm.actual
            if pressure:
                avg_cur = sum(a for a, _ in history) / len(history)
                avg_unused = sum(f for _, f in history) / len(history)
                used = avg_cur - avg_unused
                balloon_min = used + guest_free_percent * cur
                size = max(cur * (1 - self.max_change_percent), balloon_min, self.floor)
                if size <= cur and self._big_enough(cur, size):
                    targets[name] = int(size)
            else:
                size = cur + cur * self.max_change_percent
                if size >= vm.ram:
                    if cur < vm.ram:
                        targets[name] = vm.ram
                elif self._big_enough(cur, size):
                    targets[name] = int(size)
        return targets

    def _big_enough(self, cur: int, new: float) -> bool:
        return abs(new - cur) > self.min_change_percent * cur
