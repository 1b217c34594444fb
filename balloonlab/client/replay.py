"""``balloonlab.replay(PATH_OR_NAME)``: an emulated lab whose guest plays a recording back.

The emulator is built to look like the recorded VM (its QEMU version profile, RAM, the balloon at its QOM path
with its properties) and its clocks start at the recording's start, so the device stamps the recorded
``last-update`` seconds and events carry the recorded timestamps.  The ``replay`` guest model
(emulator/guests.py) answers each request with the next recorded report at its recorded second and re-enacts the
recorded host side (interval changes, targets, the balloon's size with its BALLOON_CHANGE events) at their times.
Everything above is an ordinary emulated lab: advance, the panel, the watch and the magics work on it.

What a replay cannot do, and does not pretend to (docs/recordings.md): reports the recording never saw.  Polled at
the recorded interval every report comes back at its second; faster, reports come at the recorded pace; slower,
the reports in between are skipped.  A recorded pause is not re-enacted (the replay's VM runs throughout), nor a
reset: both are in ``lab.events`` only as they happen in the replay itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..emulator.clock import NS
from ..emulator.config import QEMU_VERSIONS, BalloonSpec, ClockKind, MachineConfig, QemuVersion
from ..emulator.guests import HostChange, ReplayScript
from ..emulator.virtio import PAGE_SHIFT
from ..emulator.workloads import RecordedCurve, WorkloadSpec, parse
from ..errors import EmulatorOptionError, InvalidValueError, RecordingError
from .balloon import Balloon, start_emulated
from .recordfile import Recording, read_recording, report_entries

def resolve(source: str | os.PathLike[str]) -> Path:
    """A path, or the name of a shipped recording (``balloonlab.recordings()``)."""
    path = Path(source)
    if path.exists() or os.sep in str(source) or path.suffix in (".blab", ".gz"):
        return path
    from .shipped import shipped_path

    found = shipped_path(str(source))
    if found is None:
        from .shipped import recordings

        names = ", ".join(r.name for r in recordings()) or "none are installed"
        raise RecordingError(f"{source}: no such file, nor a shipped recording (shipped: {names})")
    return found


def load(source: str | os.PathLike[str] | Recording) -> Recording:
    """A recording read from a path or a shipped name (or given as is)."""
    return source if isinstance(source, Recording) else read_recording(resolve(source))


def qemu_profile(version: str) -> QemuVersion:
    """The emulator's version profile for a recorded QEMU: its own major.minor, else the newest profile not newer
    than it (the oldest for anything older)."""
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return QEMU_VERSIONS[-1]
    older = [p for p in QEMU_VERSIONS if tuple(map(int, p.split("."))) <= (major, minor)]
    return older[-1] if older else QEMU_VERSIONS[0]


def balloon_spec(rec: Recording) -> BalloonSpec:
    """The recorded device: at ``/machine/peripheral/ID`` with that id, else where ``-balloon virtio`` puts it."""
    device = rec.header["device"]
    path = device["path"]
    props = device.get("properties") or {}
    prefix = "/machine/peripheral/"
    return BalloonSpec(id=path[len(prefix):] if path.startswith(prefix) else None,
                       legacy=not path.startswith(prefix),
                       deflate_on_oom=props.get("deflate-on-oom") is True,
                       free_page_reporting=props.get("free-page-reporting") is True,
                       free_page_hint=props.get("free-page-hint") is True,
                       page_poison=props.get("page-poison") is not False)


def replay_script(source: str | os.PathLike[str] | Recording) -> ReplayScript:
    """What the replay guest plays, in the machine's time: the reports after the start, and the host side.

    Also the piece a simulated host's workload can drive a VM from (with ``Recording.memory_curve`` for the
    guest's appetite alone).
    """
    rec = load(source)
    start = rec.started
    ram = rec.header["ram"]

    def at(t: float) -> int:
        # Half a microsecond late: event timestamps are truncated to whole microseconds, and the wall clock's
        # float (about 2e-7 s of precision in this century) must not fall into the one before.
        return max(0, round((t - start) * NS) + 500)

    initial = None
    reports: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    for report in rec.reports:
        if report.initial:
            if report.last_update:
                initial = (report_entries(report.raw), report.last_update)
            continue
        if report.last_update and (not reports or report.last_update >= reports[-1][0]):
            reports.append((report.last_update, report_entries(report.raw)))
    host: list[tuple[int, HostChange, int]] = [(0, "interval", rec.header["interval"])]
    host += [(at(t), "interval", v) for t, v in rec.intervals]
    host += [(at(t), "target", v) for t, v in rec.targets]
    actual = rec.header.get("actual")
    for e in rec.events:
        event = e["event"]
        value = (event.get("data") or {}).get("actual")
        if event.get("event") == "BALLOON_CHANGE" and isinstance(value, int):
            host.append((at(e["t"]), "actual", (ram - value) >> PAGE_SHIFT))
    host.sort(key=lambda change: change[0])  # stable: same-time changes keep their recorded order
    ends = max([at(r.t) for r in rec.reports] + [c[0] for c in host] + [0])
    return ReplayScript(source=rec.path, start=start, initial=initial, reports=tuple(reports), host=tuple(host),
                        actual_pages=(ram - actual) >> PAGE_SHIFT if isinstance(actual, int) else 0,
                        duration_ns=ends)


def memory_curve(source: str | os.PathLike[str] | Recording,
                 definition: str = "total-available") -> Iterator[tuple[float, int]]:
    """``(VM seconds, bytes the guest uses)`` at each report of a recording (a path or a shipped name): what a
    simulated host's workload follows (``workloads={"vm0": "recording:NAME"}``) to give one of its VMs a real
    guest's appetite.  ``definition`` as in ``GuestStats.used_memory``."""
    return load(source).memory_curve(definition)


def recorded_workload(source: str | os.PathLike[str] | Recording) -> RecordedCurve:
    """A recording (a path or a shipped name) as a host VM's workload (``workloads={"vm0": "recording:NAME"}``):
    its guest's appetite (``Recording.appetite``, the used memory without a deflate-on-oom balloon) above the first
    report, from the first report's second, looping one recorded polling interval after the last report."""
    rec = load(source)
    curve = list(rec.appetite())
    if not curve:
        raise RecordingError(f"{rec.path}: no report in it says how much memory the guest used, so it cannot "
                             f"drive a workload; choose another (balloonlab.recordings())")
    start, idle = curve[0]
    points = tuple((vm - start, max(0, used - idle)) for vm, used in curve)
    return RecordedCurve(source=os.fspath(source) if not isinstance(source, Recording) else source.path,
                         ram=int(rec.header["ram"]), points=points,
                         period=points[-1][0] + max(1, int(rec.header["interval"])))


def workload(spec: str | RecordedCurve | None) -> WorkloadSpec | None:
    """What ``emulate()`` and ``Host.add_vm()`` run: a workload's name, or ``recording:NAME_OR_PATH`` read now
    (EmulatorOptionError names the choices; RecordingError a bad recording)."""
    if spec is None:
        return None
    try:
        return parse(spec, recorded_workload)
    except ValueError as exc:
        raise EmulatorOptionError(str(exc)) from None


def replay(source: str | os.PathLike[str], clock: ClockKind = "virtual", speed: float = 1.0, *,
           history: bool = False, socket_path: str | None = None, timeout: float = 10.0) -> Balloon:
    """An emulated lab replaying a recording (a path, or a shipped name from ``balloonlab.recordings()``).

    ``clock="virtual"``: time moves with ``lab.advance("1m")``; ``clock="real"``: it runs by itself, ``speed``
    times faster than the recording did.  Raises :class:`~balloonlab.errors.RecordingError` for a file that is
    not a readable recording (naming the file and the line).
    """
    if clock not in ("virtual", "real"):
        raise InvalidValueError(f"clock must be 'virtual' or 'real', not {clock!r}")
    if not isinstance(speed, (int, float)) or not 0 < speed < float("inf"):
        raise InvalidValueError(f"speed must be a positive number (10 = ten times faster), not {speed!r}")
    if clock == "virtual" and speed != 1:
        raise InvalidValueError("speed applies to clock='real'; on the virtual clock, lab.advance() sets the pace")
    rec = load(source)
    config = MachineConfig(ram_size=rec.header["ram"], balloons=[balloon_spec(rec)],
                           qemu_version=qemu_profile(rec.qemu_version), clock=clock, boot_delay=0.0,
                           start_epoch=rec.started, speed=float(speed), replay=replay_script(rec))
    return start_emulated(config, socket_path=socket_path, history=history, timeout=timeout)


__all__ = ["replay", "replay_script", "memory_curve", "recorded_workload", "workload", "qemu_profile", "resolve",
           "load"]
