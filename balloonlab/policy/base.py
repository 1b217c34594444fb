"""The policy interface: ``decide(view) -> {vm name: target bytes}``, plus the two policies with no rules."""

from __future__ import annotations

from collections.abc import Mapping

from ..units import parse_size
from .view import View, VMView


class Policy:
    """A ballooning policy.  Subclass it and write :meth:`decide`; the run calls it once per tick.

    A policy may keep state between ticks (averages, hysteresis); :meth:`reset` clears it when a run begins, so one
    policy object can be run on several days.  :meth:`max_change` is the policy's own speed limit: a run never
    moves a VM's target further than that from its ``actual`` in one tick, on a simulated host or on real VMs.
    """

    #: the name scores and plots show (default: the class name)
    name: str = ""

    def decide(self, view: View) -> Mapping[str, int]:
        """New balloon targets in bytes, by VM name; VMs left out keep theirs."""
        raise NotImplementedError(f"{type(self).__name__} must define decide(self, view) -> dict[name, bytes]")

    def max_change(self, vm: VMView) -> int | None:
        """The most this policy moves ``vm`` in one tick (bytes), or None for no limit."""
        return None

    def reset(self) -> None:
        """Forget what earlier ticks taught (a run calls this before its first tick)."""

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    def __repr__(self) -> str:
        return f"{self.label}()"


class NoPolicy(Policy):
    """Leaves every balloon alone: the baseline, a host where nobody manages memory."""

    def decide(self, view: View) -> Mapping[str, int]:
        return {}


class FixedPolicy(Policy):
    """Sets every VM (or those in ``only``) to one ``size`` at once and keeps it there: the crudest policy, and
    the way to see what a guest does when shrunk below what it uses (``FixedPolicy("64M")``)."""

    def __init__(self, size: str | int, only: list[str] | None = None) -> None:
        self.size = parse_size(size) if isinstance(size, str) else int(size)
        self.only = only

    def decide(self, view: View) -> Mapping[str, int]:
        return {name: self.size for name in view.vms if self.only is None or name in self.only}

    def __repr__(self) -> str:
        return f"FixedPolicy({self.size!r})"
