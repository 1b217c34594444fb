"""Named workloads for many VMs: what the programs in a guest do with memory over a day, seeded and on the VM clock.

A workload is a generator over a :class:`Workload` handle: it starts ramps on the guest's memory model
(``alloc``/``free``/``cache``, sizes as fractions of the VM's RAM) and yields how many seconds to sleep.  One VM
timer per guest steps it, so a day of a workload costs a few hundred timer callbacks, and every random choice comes
from the handle's own ``random.Random``, so the same seed gives the same day.

* ``idle``: nothing beyond the idle guest.
* ``steady``: a service that settles at 30-45 % of RAM and breathes by a few percent.
* ``diurnal``: follows the day: low at night, high in the afternoon (a web tier).
* ``bursty``: quiet, then at random a short burst of 25-55 % (a cron job, a cache rebuild).
* ``leak``: grows by 2-4 % of RAM an hour until the OOM killer (or the balloon) stops it; the service restarts.
* ``batch``: every 2-4 h a job reads its input (page cache) and works on 40-60 % of RAM for 20-40 min.

``mixed`` (for a host) gives each VM one of these, varied and seeded (:func:`assign`).

``recording:NAME_OR_PATH`` replays a real guest's appetite (:class:`RecordedCurve`, made from a recording by
``balloonlab/client/replay.py``, ``recorded_workload``): the VM's processes hold what the recorded guest held above
its idle start, scaled by the ratio of the two RAM sizes, ramping from one recorded report to the next, and the
curve starts again from its beginning when it ends (docs/recordings.md, "Replay as a workload").
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from .clock import NS, VM, Clock
from .memory import PAGE, MemoryModel

WorkloadName = Literal["idle", "steady", "diurnal", "bursty", "leak", "batch"]
WORKLOADS: tuple[WorkloadName, ...] = get_args(WorkloadName)
MIXED = "mixed"
#: ``workloads={"vm0": "recording:NAME_OR_PATH"}``: a recorded guest's appetite (a shipped name or a file).
RECORDING = "recording:"
DAY = 86400.0

Steps = Generator[float, None, None]


@dataclass(frozen=True)
class RecordedCurve:
    """A recorded guest's appetite, ready to drive a VM: what its programs held above its idle start at each
    report.  The client reads it from the recording (``balloonlab/client/replay.py``, ``recorded_workload``,
    through the recordings' own reader); the emulator only plays it."""

    source: str  #: the shipped name or path it was read from
    ram: int  #: the recorded VM's RAM (bytes): the curve is scaled by the ratio of the VM's RAM to this
    #: (seconds from the first report, bytes held above the first report's use), in time order, from 0
    points: tuple[tuple[float, int], ...]
    #: seconds after which the curve starts again (its last report plus one recorded polling interval)
    period: float

    @property
    def name(self) -> str:
        return RECORDING + self.source

    def held_at(self, seconds: float) -> int:
        """The recorded bytes above idle at ``seconds`` into the curve (looping), as the workload ramps them:
        linearly from one report to the next, held after the last."""
        t = seconds % self.period
        before = self.points[0]
        for point in self.points:
            if point[0] >= t:
                if point[0] == before[0]:
                    return point[1]
                share = (t - before[0]) / (point[0] - before[0])
                return round(before[1] + (point[1] - before[1]) * share)
            before = point
        return before[1]


#: What a VM runs: a named workload or a recorded guest's curve.
WorkloadSpec = WorkloadName | RecordedCurve


class Workload:
    """One named workload running in one guest (see the module docstring)."""

    def __init__(self, spec: WorkloadSpec, memory: MemoryModel, clock: Clock, seed: int) -> None:
        self.curve = spec if isinstance(spec, RecordedCurve) else None
        self.name = self.curve.name if self.curve else _check(spec)
        self.memory = memory
        self.clock = clock
        self.rng = random.Random(f"{self.name}:{seed}")
        self._timer = clock.new_timer(VM, self._step)
        self._steps: Steps | None = None

    def start(self) -> None:
        """Begin (again) from the top: at boot and after every reboot."""
        self._steps = _recorded(self) if self.curve else _PROGRAMS[self.name](self)
        self._timer.mod_in(0)

    def stop(self) -> None:
        self._timer.delete()
        self._steps = None

    def _step(self) -> None:
        if self._steps is None:
            return
        try:
            delay = next(self._steps)
        except StopIteration:
            self._steps = None
            return
        self._timer.mod_in(int(delay * NS))

    # -- what a program can do ------------------------------------------------------------------------------
    def _bytes(self, fraction: float) -> int:
        return int(self.memory.ram_size * fraction) // 4096 * 4096

    def alloc(self, fraction: float, over: float) -> None:
        """Allocate and touch ``fraction`` of RAM over ``over`` seconds."""
        self.memory.add_ramp("anon", self._bytes(fraction), self.clock.vm_ns(), int(over * NS))

    def free(self, fraction: float | None, over: float) -> None:
        """Release ``fraction`` of RAM (None: all this workload holds) over ``over`` seconds."""
        mem = self.memory
        now = self.clock.vm_ns()
        mem.settle(now)
        held = mem.workload_anon()
        size = held if fraction is None else min(held, self._bytes(fraction))
        if size > 0:
            mem.add_ramp("anon", -size, now, int(over * NS))

    def cache(self, fraction: float, over: float) -> None:
        """Read files: the page cache grows by ``fraction`` of RAM over ``over`` seconds."""
        self.memory.add_ramp("cache", self._bytes(fraction), self.clock.vm_ns(), int(over * NS))

    def hold(self, size: int, over: float) -> None:
        """Allocate or release so that this workload holds ``size`` bytes ``over`` seconds from now."""
        mem = self.memory
        now = self.clock.vm_ns()
        mem.settle(now)
        diff = size // PAGE * PAGE - mem.workload_anon()
        if diff:
            mem.add_ramp("anon", diff, now, int(over * NS))

    def held(self) -> float:
        """The fraction of RAM this workload holds now (the OOM killer may have taken it)."""
        mem = self.memory
        mem.settle(self.clock.vm_ns())
        return mem.workload_anon() / mem.ram_size

    def uniform(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)


def _idle(w: Workload) -> Steps:
    return
    yield 0.0  # a generator that ends at once


def _steady(w: Workload) -> Steps:
    w.alloc(w.uniform(0.30, 0.45), 300)
    w.cache(w.uniform(0.05, 0.10), 600)
    yield 600
    while True:
        d = w.uniform(0.01, 0.04)
        w.alloc(d, 60)
        yield w.uniform(300, 900)
        w.free(d, 60)
        yield w.uniform(300, 900)


def _diurnal(w: Workload) -> Steps:
    low, high = w.uniform(0.05, 0.15), w.uniform(0.45, 0.65)
    # where in its day the VM boots: the fleet's VMs do not all peak at once
    phase = w.uniform(0, DAY)
    step = 900.0
    while True:
        # trough at 03:00 of the VM's day, peak at 15:00
        hour = (phase + w.clock.vm_ns() / NS + step) % DAY / 3600
        want = low + (high - low) * (1 - math.cos(2 * math.pi * (hour - 3) / 24)) / 2
        diff = want - w.held()
        if diff > 0:
            w.alloc(diff, step)
            w.cache(diff / 10, step)
        elif diff < 0:
            w.free(-diff, step)
        yield step


def _bursty(w: Workload) -> Steps:
    while True:
        yield w.rng.expovariate(1 / 1800)
        size = w.uniform(0.25, 0.55)
        w.alloc(size, 30)
        yield w.uniform(120, 600)
        w.free(None, 30)
        yield 30


def _leak(w: Workload) -> Steps:
    rate = w.uniform(0.02, 0.04)  # of RAM per hour
    while True:
        w.alloc(rate / 6, 600)
        yield 600


def _batch(w: Workload) -> Steps:
    yield w.uniform(600, 3600)
    while True:
        w.cache(w.uniform(0.10, 0.25), 300)
        w.alloc(w.uniform(0.40, 0.60), 300)
        yield w.uniform(1200, 2400)
        w.free(None, 60)
        yield w.uniform(7200, 14400)


def _recorded(w: Workload) -> Steps:
    """The recorded curve, scaled by RAM: reach each report's value by its second, then start again."""
    curve = w.curve
    assert curve is not None
    scale = w.memory.ram_size / curve.ram
    while True:
        at = 0.0
        for t, extra in curve.points:
            w.hold(int(extra * scale), t - at)
            if t > at:
                yield t - at
            at = t
        yield curve.period - at


_PROGRAMS: dict[str, Callable[[Workload], Steps]] = {
    "idle": _idle, "steady": _steady, "diurnal": _diurnal, "bursty": _bursty, "leak": _leak, "batch": _batch,
}


#: Reads ``recording:NAME_OR_PATH`` (the client's ``recorded_workload``); raises RecordingError for a bad one.
ReadRecording = Callable[[str], RecordedCurve]


def assign(spec: str | dict[str, str] | None, names: Iterable[str], seed: int,
           recorded: ReadRecording | None = None) -> dict[str, WorkloadSpec]:
    """Which workload each named VM runs: None -> idle, a name -> that one for all, ``"mixed"`` -> a varied
    seeded set (every workload once before any repeats), a dict -> as given (idle for VMs it does not name).
    ``recording:NAME_OR_PATH`` is read with ``recorded``, once however many VMs run it."""
    names = list(names)
    reader = None if recorded is None else functools.cache(recorded)  # one read per recording

    if spec is None:
        return {n: "idle" for n in names}
    if isinstance(spec, dict):
        plan: dict[str, WorkloadSpec] = {n: "idle" for n in names}
        for name, workload in spec.items():
            if name not in plan:
                raise ValueError(f"workloads names {name!r}, which is not a VM of this host ({', '.join(plan)})")
            plan[name] = parse(workload, reader)
        return plan
    if spec == MIXED:
        order = list(WORKLOADS)
        random.Random(seed).shuffle(order)
        return {n: order[i % len(order)] for i, n in enumerate(names)}
    one = parse(spec, reader, f", {MIXED!r}")
    return {n: one for n in names}


def parse(spec: str | RecordedCurve, recorded: ReadRecording | None = None, more: str = "") -> WorkloadSpec:
    """A workload as given by a user: a name, ``recording:NAME_OR_PATH`` (read with ``recorded``), or a curve
    already read.  ValueError names the choices."""
    if isinstance(spec, RecordedCurve):
        return spec
    if isinstance(spec, str) and spec.startswith(RECORDING):
        source = spec[len(RECORDING):]
        if not source:
            raise ValueError(f"{RECORDING!r} needs the name of a shipped recording (balloonlab.recordings()) "
                             f"or a file's path: {RECORDING}tmpfs-fill-7.2")
        if recorded is None:
            raise ValueError(f"{spec}: this caller reads no recordings")
        return recorded(source)
    return _check(spec, more)


def _check(name: object, more: str = "") -> WorkloadName:
    for known in WORKLOADS:
        if name == known:
            return known
    raise ValueError(f"unknown workload {name!r} (choose from {', '.join(WORKLOADS)}{more}, "
                     f"or '{RECORDING}NAME_OR_PATH' for a recording: balloonlab.recordings())")
