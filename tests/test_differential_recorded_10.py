"""The emulator's QEMU 10.0 profile against answers recorded from the real QEMU 10.0, without starting it.

``tests/differential/recorded/qemu-10.0.json`` holds what Debian 13's QEMU 1:10.0.13+ds-0+deb13u1 answered
(``python -m tests.differential.record debian13``): the greeting, the 16-stat wire order, the balloon error that
names 'value', query-status without singlestep, and system_reset clearing the stats.  These run wherever the
emulator runs (no QEMU needed); where the real QEMU 10.0 is here, the last test re-records the paused answers and
checks the file still says what QEMU says.  The live differential tests (``debian13-qemu-10.0``) compare the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from balloonlab.stats import UNSET
from tests.differential import conversations as C
from tests.differential.conversation import Conversation, Poll, run_conversation
from tests.differential.targets import EmulatedQEMU, VMSpec
from tests.fixtures.requirements import require

RECORDED = json.loads((Path(__file__).parent / "differential" / "recorded" / "qemu-10.0.json").read_text())
PAUSED = RECORDED["paused"]
GUEST = RECORDED["linux-6.1-guest"]


def same(got, recorded) -> bool:
    """Equal, member order included (QEMU's wire order is part of what is recorded)."""
    return json.dumps(got) == json.dumps(recorded)


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
    (greeting,), (version,) = answers(paused_10, C.command("query-version"))
    assert same(greeting, PAUSED["greeting"]) and same(version, PAUSED["query-version"])


def test_unset_stats_have_16_keys_in_wire_order(paused_10):
    _, (reply,) = answers(paused_10, C.stats())
    assert len(reply["return"]["stats"]) == 16 and same(reply, PAUSED["guest-stats"])


@pytest.mark.parametrize("value", [0, -1])
def test_balloon_size_error_names_value(paused_10, value):
    _, (reply,) = answers(paused_10, C.command("balloon", {"value": value}))
    assert same(reply, PAUSED[f"balloon {value}"])


def test_query_status_has_no_singlestep(paused_10):
    _, (reply,) = answers(paused_10, C.command("query-status"))
    assert same(reply, PAUSED["query-status"])


def test_running_guest_reports_16_stats_and_reset_clears_them(linux_10):
    observations = run_conversation(Conversation("recorded 10.0 guest", [
        C.command("query-status"),
        Poll(C.STATS_MESSAGE, C.reported, 60, "boot report", expect=True),
        C.command("system_reset"),
        C.stats(label="right after reset"),
        Poll(C.STATS_MESSAGE, C.reported, 60, "the rebooted guest's driver reports again", expect=True),
    ]), linux_10)
    _, status, boot, reset, after, again = observations
    assert same(status.replies, [GUEST["query-status"]])
    assert boot.value is True
    stats = boot.replies[0]["return"]["stats"]
    assert list(stats) == list(PAUSED["guest-stats"]["return"]["stats"])
    # the 10.0 profile's default guest is Linux 6.12 (spec A2): all 16 set, the six newer ones 0 when idle
    assert all(v != UNSET for v in stats.values())
    assert [stats[f"stat-{k}"] for k in ("oom-kills", "alloc-stalls", "async-scans", "direct-scans",
                                        "async-reclaims", "direct-reclaims")] == [0] * 6
    assert reset.replies == [{"return": {}}]
    assert [(e["event"], e.get("data")) for e in reset.events] == [
        ("RESET", {"guest": False, "reason": "host-qmp-system-reset"})]
    assert same(after.replies, [GUEST["guest-stats after system_reset"]])
    assert again.value is True


@pytest.mark.qemu
def test_the_recording_is_what_real_qemu_10_says():
    """Re-record the paused answers on the real QEMU 10.0: a recording that no longer matches fails here."""
    require("qemu", "debian13-qemu")
    from tests.differential.record import record_paused

    assert same(record_paused("debian13"), PAUSED)
