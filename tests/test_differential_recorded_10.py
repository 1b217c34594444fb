"""The emulator's QEMU 10.0 profile against answers recorded from real QEMU 10.0 (spec A2), not a live diff.

No QEMU 10.0 runs on these machines (Debian 12 ships 7.2), so instead of a differential run this checks the
emulator (``balloonlab emulate --qemu-version 10.0``, the same command line as the 7.2 differential tests) against
what a real Debian 13 QEMU 1:10.0.13+ds-0+deb13u1 answered when spec A2 was recorded: the greeting, the 16-stat
wire order, the balloon error that names 'value', query-status without singlestep, and system_reset clearing the
stats.  Everything else 10.0 answered as 7.2 did; the 7.2 differential tests cover that.
"""

from __future__ import annotations

import importlib.util

import pytest

from balloonlab.stats import UNSET, WIRE_ORDER_16
from tests.differential import conversations as C
from tests.differential.conversation import Conversation, Poll, run_conversation
from tests.differential.targets import EmulatedQEMU, VMSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("balloonlab.cli.emulate") is None,
                                reason="`balloonlab emulate` (balloonlab/cli/emulate.py) is not available")

#: Recorded from real QEMU 10.0 (spec A2).
GREETING_10 = {"QMP": {"version": {"qemu": {"micro": 13, "minor": 0, "major": 10},
                                   "package": "Debian 1:10.0.13+ds-0+deb13u1"}, "capabilities": ["oob"]}}
UNSET_STATS_10 = {"return": {"stats": {f"stat-{k}": UNSET for k in WIRE_ORDER_16}, "last-update": 0}}
SIZE_ERROR_10 = {"error": {"class": "GenericError", "desc": "Parameter 'value' expects a size"}}


@pytest.fixture(scope="module")
def paused_10():
    emu = EmulatedQEMU(VMSpec(paused=True), "10.0")
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def linux_10():
    # spec A2 recorded the 16 set stats with the Debian 13 kernel (6.12), which reports all 16 tags
    emu = EmulatedQEMU(VMSpec(guest=True), "10.0", kernel="6.12")
    try:
        yield emu
    finally:
        emu.stop()


def answers(side, *steps) -> list[list[dict]]:
    """The replies of each step (after the greeting), one list per step."""
    observations = run_conversation(Conversation("recorded 10.0", list(steps)), side)
    return [o.replies for o in observations]


def test_greeting_and_version(paused_10):
    greeting, version = answers(paused_10, C.command("query-version"))
    assert greeting == [GREETING_10]
    assert version == [{"return": GREETING_10["QMP"]["version"]}]


def test_unset_stats_have_16_keys_in_wire_order(paused_10):
    _, (reply,) = answers(paused_10, C.stats())
    assert list(reply["return"]["stats"]) == [f"stat-{k}" for k in WIRE_ORDER_16]
    assert reply == UNSET_STATS_10


@pytest.mark.parametrize("value", [0, -1])
def test_balloon_size_error_names_value(paused_10, value):
    _, reply = answers(paused_10, C.command("balloon", {"value": value}))
    assert reply == [SIZE_ERROR_10]


def test_query_status_has_no_singlestep(paused_10):
    _, reply = answers(paused_10, C.command("query-status"))
    assert reply == [{"return": {"status": "prelaunch", "running": False}}]


def test_running_guest_reports_16_stats_and_reset_clears_them(linux_10):
    observations = run_conversation(Conversation("recorded 10.0 guest", [
        C.command("query-status"),
        Poll(C.STATS_MESSAGE, C.reported, 60, "boot report", expect=True),
        C.command("system_reset"),
        C.stats(label="right after reset"),
        Poll(C.STATS_MESSAGE, C.reported, 60, "the rebooted guest's driver reports again", expect=True),
    ]), linux_10)
    _, status, boot, reset, after, again = observations
    assert status.replies == [{"return": {"status": "running", "running": True}}]
    assert boot.value is True
    stats = boot.replies[0]["return"]["stats"]
    assert list(stats) == [f"stat-{k}" for k in WIRE_ORDER_16]
    # the 10.0 profile's default guest is Linux 6.12 (spec A2): all 16 set, the six newer ones 0 when idle
    assert all(v != UNSET for v in stats.values())
    assert [stats[f"stat-{k}"] for k in ("oom-kills", "alloc-stalls", "async-scans", "direct-scans",
                                        "async-reclaims", "direct-reclaims")] == [0] * 6
    assert reset.replies == [{"return": {}}]
    assert [(e["event"], e.get("data")) for e in reset.events] == [
        ("RESET", {"guest": False, "reason": "host-qmp-system-reset"})]
    assert after.replies == [UNSET_STATS_10]
    assert again.value is True
