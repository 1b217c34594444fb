"""The score of a run: what a policy saved on the host against what it cost the guests.

Host figures come from the host's model at every tick; guest figures from each guest's own counters (``oom-kills``,
``alloc-stalls``, ``swap-out``), summed over the guests as increases since the run began (a counter that falls back,
as after a reboot, counts from zero again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .view import View

#: The score's keys, in the order tables show them.
SCORE_KEYS = ("host_used_avg", "host_used_peak", "overcommit_seconds", "host_swap_peak", "oom_kills",
              "alloc_stalls", "guest_swap_out", "target_changes", "targets_below_use", "ticks", "seconds")
_COUNTERS = {"oom-kills": "oom_kills", "alloc-stalls": "alloc_stalls", "swap-out": "guest_swap_out"}


@dataclass
class Scorer:
    """Accumulates the score tick by tick (see the module docstring)."""

    tick_seconds: float
    ticks: int = 0
    used_sum: int = 0
    used_peak: int = 0
    swap_peak: int = 0
    overcommit_ticks: int = 0
    target_changes: int = 0
    targets_below_use: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS.values(), 0))
    _last: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, view: View) -> None:
        host = view.host
        self.ticks += 1
        self.used_sum += host.used
        self.used_peak = max(self.used_peak, host.used)
        self.swap_peak = max(self.swap_peak, host.swap_used)
        # the VMs' memory (what their QEMUs hold plus what the host swapped out of them) exceeds the host's RAM
        if host.used + host.swap_used > host.memory:
            self.overcommit_ticks += 1
        for name, vm in view.vms.items():
            for stat, key in _COUNTERS.items():
                value = vm.stat(stat)
                if value is None:
                    continue
                last = self._last.get((name, stat))
                if last is not None:
                    self.counters[key] += value - last if value >= last else value
                self._last[(name, stat)] = value

    def score(self) -> dict[str, float]:
        return {
            "host_used_avg": self.used_sum // self.ticks if self.ticks else 0,
            "host_used_peak": self.used_peak,
            "overcommit_seconds": self.overcommit_ticks * self.tick_seconds,
            "host_swap_peak": self.swap_peak,
            **self.counters,
            "target_changes": self.target_changes,
            "targets_below_use": self.targets_below_use,
            "ticks": self.ticks,
            "seconds": self.ticks * self.tick_seconds,
        }
