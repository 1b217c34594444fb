"""Differential: the command line itself, where the emulator knowingly differs (docs/differences.md).

QEMU 7.2 refuses ``-balloon virtio`` (QEMU's old stats doc still shows it); ``balloonlab emulate`` accepts it so
the doc's examples run verbatim, and puts the device where the doc says.  Both halves are checked, so the
difference stays exactly the documented one.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.differential.conversation import Conversation, run_conversation
from tests.differential.conversations import qom_get
from tests.differential.differences import DIFFERENCES
from tests.differential.targets import EmulatedQEMU, VMSpec, needs, qemu_version
from tests.fixtures.requirements import require

pytestmark = pytest.mark.qemu

LEGACY = ["-m", "512", "-nodefaults", "-display", "none", "-balloon", "virtio", "-S"]


@pytest.fixture(scope="module", autouse=True)
def _available():
    require(*needs(VMSpec()))


def test_legacy_balloon_option_is_the_documented_difference():
    difference = DIFFERENCES["legacy-balloon-option"]
    real = subprocess.run([shutil.which("qemu-system-x86_64"), "-accel", "tcg", *LEGACY],
                          capture_output=True, text=True, timeout=30)
    assert real.returncode != 0 and "-balloon: invalid option" in real.stderr, (real.returncode, real.stderr)

    emu = EmulatedQEMU(VMSpec(device=False, paused=True), qemu_version(), qemu_args=LEGACY)
    try:
        replies = [o.replies for o in run_conversation(Conversation(difference.id, [
            qom_get("type", "/machine/peripheral-anon/device[1]"),
            qom_get("guest-stats-polling-interval", "/machine/peripheral-anon/device[1]"),
        ]), emu)][1:]
    finally:
        emu.stop()
    assert replies == [[{"return": "virtio-balloon-pci"}], [{"return": 0}]]


def test_unknown_option_is_refused_by_both():
    """Both refuse an option they do not know, in the same words (each prefixed with its own program name)."""
    real = subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-bogus-option", "-S"], capture_output=True,
                          text=True, timeout=30)
    assert real.returncode == 1 and real.stderr.startswith("qemu-system-x86_64: -bogus-option: invalid option")
    with pytest.raises(RuntimeError, match="exited with 1: balloonlab emulate: -bogus-option: invalid option"):
        EmulatedQEMU(VMSpec(paused=True), qemu_version(),
                     qemu_args=["-m", "512", "-bogus-option", "-S"]).stop()


def test_free_page_hint_without_an_iothread_is_refused_by_both_in_qemus_words():
    """QEMU 7.2 refuses free-page-hint=on without iothread=; the emulator models no iothread and refuses it the same
    way (docs/differences.md: no-iothread), and its default (off) is QEMU's (the QOM walks compare the value)."""
    device = "virtio-balloon-pci,free-page-hint=on"
    real = subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-device",
                           device, "-S"], capture_output=True, text=True, timeout=30)
    said = f"-device {device}: 'free-page-hint' requires 'iothread' to be set"
    assert (real.returncode, real.stderr.strip()) == (1, f"qemu-system-x86_64: {said}")
    with pytest.raises(RuntimeError, match=f"exited with 1: balloonlab emulate: {re.escape(said)}"):
        EmulatedQEMU(VMSpec(device=False, paused=True), qemu_version(),
                     qemu_args=["-m", "512", "-device", device, "-S"]).stop()
