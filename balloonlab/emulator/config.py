"""What an emulated QEMU is made of: the parsed equivalent of a qemu-system command line.

``balloonlab emulate`` (``cli/emulate.py``) and ``balloonlab.emulate()`` both build a :class:`MachineConfig`;
``machine.py`` builds the VM from it.  Nothing here does anything: it is the contract between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from ..errors import EmulatorOptionError

if TYPE_CHECKING:
    from .guests import ReplayScript
    from .workloads import WorkloadSpec

#: QEMU version profiles the emulator can answer as (newest last; the default is the newest).
QemuVersion = Literal["7.2", "9.2", "10.0"]
QEMU_VERSIONS: tuple[QemuVersion, ...] = get_args(QemuVersion)
#: Guest models (see guests.py).
GuestModel = Literal["linux", "nodriver", "buggy", "partial", "windows"]
GUEST_MODELS: tuple[GuestModel, ...] = get_args(GuestModel)
#: ``real``: time passes as on the wall; ``virtual``: only when ``advance()`` says so (emulator/clock.py).
ClockKind = Literal["real", "virtual"]
CLOCKS: tuple[ClockKind, ...] = get_args(ClockKind)


@dataclass
class BalloonSpec:
    """One ``-device virtio-balloon-pci[,id=ID][,prop=value...]``."""

    driver: str = "virtio-balloon-pci"
    id: str | None = None
    deflate_on_oom: bool = False
    free_page_reporting: bool = False
    free_page_hint: bool = False
    #: ``page-poison``: on by default in QEMU (offers VIRTIO_BALLOON_F_PAGE_POISON).
    page_poison: bool = True
    #: ``guest-stats-polling-interval`` given on the command line (QEMU accepts it as a -device property).
    polling_interval: int = 0
    #: ``-balloon virtio`` (the legacy spelling of QEMU's stats doc): anonymous, at peripheral-anon/device[1].
    legacy: bool = False

    def check(self) -> None:
        """Refuse what QEMU's realize refuses, in its words.  Free page hinting runs on an iothread
        (``virtio_balloon_device_realize``) and the emulator models none, so ``free-page-hint=on`` always fails,
        as it does on QEMU without ``iothread=`` (docs/differences.md: ``no-iothread``)."""
        if self.free_page_hint:
            raise EmulatorOptionError("'free-page-hint' requires 'iothread' to be set")


@dataclass
class MachineConfig:
    """A VM: RAM, run state at start, balloon devices, which QEMU it answers as, which guest runs in it."""

    ram_size: int = 128 << 20  #: bytes; qemu-system's default -m is 128 MiB
    balloons: list[BalloonSpec] = field(default_factory=list)
    start_paused: bool = False  #: -S
    nodefaults: bool = False  #: -nodefaults
    qemu_version: QemuVersion = QEMU_VERSIONS[-1]
    guest: GuestModel = "linux"
    clock: ClockKind = "real"
    #: Seed for the guest's workload noise, so a virtual-clock run is reproducible.
    seed: int = 0
    #: Kernel of the ``linux`` guest: ``"6.1"`` (reports tags 0-9) or ``"6.12"`` (all 16).  None: what was
    #: observed with the version profile (6.1 with 7.2, 6.12 with 9.2 and 10.0).
    guest_kernel: str | None = None
    #: Seconds from power-on to the guest's balloon driver loading (its boot report).  None: the model's default
    #: (1 s; a TCG boot of the tiny guest takes 2.5-4 s).  ``balloonlab.emulate()`` asks for a quick boot so that a
    #: lab has stats at once; only the duration changes, never the order of what happens.
    boot_delay: float | None = None
    #: Serve one QMP client at a time, as QEMU does (the others wait ungreeted); False (the default) serves every
    #: client at once, so a notebook's lab, %%qmp and qmp-shell can share one emulated VM (emulator/qmp_server.py).
    single_client: bool = False
    #: Wall-clock time (Unix seconds) at which the machine's clocks start; None: now.  A replay starts at its
    #: recording's start, so ``last-update`` and event timestamps read as they were recorded.
    start_epoch: float | None = None
    #: Real clock only: machine seconds per host second (a replay at 10x).
    speed: float = 1.0
    #: A recording to play back: the guest is then the ``replay`` model (guests.py), whatever ``guest`` says.
    replay: "ReplayScript | None" = None
    #: What the guest's programs do with memory over time (workloads.py: idle, steady, diurnal, bursty, leak,
    #: batch, or a recorded guest's curve); None: nothing but what ``x-balloonlab-guest`` actions start.
    workload: WorkloadSpec | None = None


def machine_config(*, guest: GuestModel, ram: int, clock: ClockKind, qemu_version: QemuVersion,
                   id: str | None = None, paused: bool = False, seed: int = 0, guest_kernel: str | None = None,
                   boot_delay: float | None = 0.05, free_page_reporting: bool = False, deflate_on_oom: bool = False,
                   workload: WorkloadSpec | None = None, single_client: bool = False) -> MachineConfig:
    """The MachineConfig of one VM as ``balloonlab.emulate()`` and a host make it, every choice checked
    (EmulatorOptionError names the choices)."""
    from .workloads import parse  # the workload programs themselves load only when a guest runs one

    if guest not in GUEST_MODELS:
        raise EmulatorOptionError(f"unknown guest model {guest!r}; choose one of {', '.join(GUEST_MODELS)}")
    if clock not in CLOCKS:
        raise EmulatorOptionError(f"unknown clock {clock!r}; choose one of {', '.join(CLOCKS)}")
    version = next((v for v in QEMU_VERSIONS if v == str(qemu_version)), None)
    if version is None:
        raise EmulatorOptionError(
            f"unknown QEMU version {qemu_version!r}; the emulator answers as {', '.join(QEMU_VERSIONS)}")
    if workload is not None:
        try:
            workload = parse(workload)  # a recording comes read already (client/replay.py, recorded_workload)
        except ValueError as exc:
            raise EmulatorOptionError(str(exc)) from None
    for prop, value in (("free_page_reporting", free_page_reporting), ("deflate_on_oom", deflate_on_oom)):
        if not isinstance(value, bool):
            raise EmulatorOptionError(f"{prop} is a device property that is on or off: give True or False, "
                                      f"not {value!r}")
    spec = BalloonSpec(id=id, legacy=id is None, free_page_reporting=free_page_reporting,
                       deflate_on_oom=deflate_on_oom)
    return MachineConfig(ram_size=ram, balloons=[spec], start_paused=paused, qemu_version=version,
                         guest=guest, clock=clock, seed=seed, guest_kernel=guest_kernel, boot_delay=boot_delay,
                         workload=workload, single_client=single_client)
