"""The emulator's QOM tree against a real QEMU 7.2: every property of the machine, the balloon's PCI proxy, its
virtio bus and backend, listed and read, must match name for name, type for type, value for value, in order.

No guest is needed: QEMU starts paused (-S) with no kernel, which is when the balloon's state is known exactly.
"""

from __future__ import annotations

import asyncio

import pytest

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.config import BalloonSpec, MachineConfig
from balloonlab.emulator.machine import Machine
from balloonlab.errors import QMPError

pytestmark = pytest.mark.qemu

DEVICE = "/machine/peripheral/balloon0"
PATHS = ("/", "/machine", "/machine/peripheral", "/machine/peripheral-anon", DEVICE, DEVICE + "/virtio-bus",
         DEVICE + "/virtio-backend")
DYNAMIC = {"rtc-time"}  # the host's clock at the moment of reading


def _listing(execute) -> dict[str, list]:
    out = {}
    for path in PATHS:
        rows = []
        for entry in execute("qom-list", {"path": path}):
            rows.append((entry["name"], entry["type"],
                         None if entry["name"] in DYNAMIC else execute("qom-get", {"path": path,
                                                                                 "property": entry["name"]})))
        out[path] = rows
    return out


def _real_listing(socket_path: str) -> dict[str, list]:
    from qemu.qmp import ExecuteError, QMPClient

    async def session() -> dict[str, list]:
        client = QMPClient("balloonlab-qom-check")
        await client.connect(socket_path)
        try:
            async def run(command, arguments):
                try:
                    return await client.execute(command, arguments)
                except ExecuteError as exc:
                    return {"error": [exc.error.error.class_, exc.error.error.desc]}

            out = {}
            for path in PATHS:
                rows = []
                for entry in await run("qom-list", {"path": path}):
                    value = None if entry["name"] in DYNAMIC else await run(
                        "qom-get", {"path": path, "property": entry["name"]})
                    rows.append((entry["name"], entry["type"], value))
                out[path] = rows
            return out
        finally:
            await client.disconnect()

    return asyncio.run(session())


def test_qom_tree_matches_real_qemu_72(start_vm):
    vm = start_vm(guest=False, paused=True, memory="512M", balloon_id="balloon0")
    real = _real_listing(vm.qmp_socket)
    machine = Machine(MachineConfig(ram_size=512 << 20, balloons=[BalloonSpec(id="balloon0")], start_paused=True,
                                    qemu_version="7.2"), Clock("virtual"))
    machine.start()

    def execute(command, arguments):
        try:
            return machine.execute(command, arguments)
        except QMPError as exc:
            return {"error": [exc.error_class, exc.desc]}

    emulated = _listing(execute)
    for path in PATHS:
        assert [_comparable(r) for r in emulated[path]] == [_comparable(r) for r in real[path]], path


def _comparable(row: tuple) -> tuple:
    """Links into /machine/unattached number devices by command line (the launcher adds chardevs): name them only."""
    name, typ, value = row
    if isinstance(value, str) and value.startswith("/machine/unattached/"):
        value = "/machine/unattached/..."
    return name, typ, value
