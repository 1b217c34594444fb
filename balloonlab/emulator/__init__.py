"""The emulated QEMU: a virtio-balloon device model behind a real QMP server on a unix socket.

    emu = Emulator(MachineConfig(ram_size=512 << 20, balloons=[BalloonSpec(id="balloon0")]))
    await emu.start()          # emu.socket_path: any QMP client (qemu.qmp, qmp-shell, balloonlab) can attach
    ...
    await emu.stop()

``balloonlab emulate`` (options.py) runs one in the foreground from a qemu-system style command line.
"""

from __future__ import annotations

from .config import CLOCKS, GUEST_MODELS, QEMU_VERSIONS, BalloonSpec, ClockKind, GuestModel, MachineConfig, QemuVersion
from .runner import Emulator

__all__ = ["Emulator", "MachineConfig", "BalloonSpec", "QEMU_VERSIONS", "GUEST_MODELS", "CLOCKS", "QemuVersion",
           "GuestModel", "ClockKind"]
