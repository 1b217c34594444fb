"""Debian 13's QEMU 10.0 (``LiveVM.start(qemu="debian13")``), run from its debootstrapped tree.

Skipped (in CI: failed) unless the tree was built (``balloonlab guest qemu``, as root: a minute or two, ~360 MB).
What it must show is docs/qemu-behaviour.md, A2: 16 stat keys, of which the Linux 6.1 guest fills the first ten
tags.
"""

from __future__ import annotations

import pytest

from balloonlab.live.debian_qemu import find_debian_qemu
from balloonlab.stats import UNSET, stats_for_version
from tests.fixtures.requirements import require
from tests.fixtures.qemu import guest_image, qemu_binary, qmp_run, start_vm  # noqa: F401  (fixtures)

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def debian13():
    require("debian13-qemu")
    tree = find_debian_qemu("debian13")
    assert tree is not None
    return tree


def guest_stats(vm) -> dict:
    return qmp_run(vm.qmp_socket, ("qom-get", {"path": "/machine/peripheral/balloon0", "property": "guest-stats"}))[0]


def test_qemu_10_without_a_guest(start_vm, debian13) -> None:
    vm = start_vm(guest=False, qemu="debian13")
    assert vm.qemu_version == debian13.version and vm.qemu_version.startswith("10.")
    assert vm.argv[0].endswith("ld-linux-x86-64.so.2") and str(debian13.root / "usr/share/seabios") in vm.argv
    status, = qmp_run(vm.qmp_socket, "query-status")
    assert status == {"status": "running", "running": True}  # 7.2 also said "singlestep": false
    assert guest_stats(vm) == {"stats": {s.qmp_key: UNSET for s in stats_for_version((10, 0))}, "last-update": 0}


def test_qemu_10_with_the_linux_61_guest(start_vm, debian13) -> None:
    vm = start_vm(qemu="debian13")
    assert vm.guest_info["driver"] == "yes" and vm.guest_info["device"] == "yes"
    stats = guest_stats(vm)
    assert stats["last-update"] > 0
    old = {s.qmp_key for s in stats_for_version((7, 2))}
    assert {k for k, v in stats["stats"].items() if v != UNSET} == old  # the 6.1 driver sends tags 0-9 only
    assert len(stats["stats"]) == 16
    assert vm.exec("echo from the guest") == "from the guest\n"
