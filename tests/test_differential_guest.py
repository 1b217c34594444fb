"""Differential: a Linux 6.1 guest with virtio_balloon, real QEMU vs the emulator's ``linux`` guest.

One VM per side and real QEMU for the whole module (the guest boots once per QEMU); the conversations run in
file order and each restores what it changed, except the last (system_reset: 7.2 keeps the stats, 10.0 clears
them; the emulator's profile must do what its QEMU does).  Guest-produced values are compared by shape, the
timing behaviour (refresh, freeze, poll at once, pause) by whether last-update moved within a deadline, and
the polling period, its countdown and BALLOON_CHANGE timestamps measured against real QEMU's (compare.py: timing,
event-times).
"""

from __future__ import annotations

import pytest

from tests.differential import conversations as C
from tests.differential.targets import PROFILE_IDS, PROFILES, VMSpec, check, start_pair

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def linux(request):
    """One booted guest per real QEMU (7.2 here; Debian 13's 10.0 when its tree is built)."""
    yield from start_pair(VMSpec(guest=True, qemu=request.param))


@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def linux_paused(request):
    """-S with the guest kernel: nothing has run yet."""
    yield from start_pair(VMSpec(guest=True, paused=True, qemu=request.param))


def test_paused_guest_then_boot(linux_paused):
    check(linux_paused, C.GUEST_PAUSED_THEN_BOOT)


def test_boot_report_polling_freeze_pause(linux):
    check(linux, C.GUEST_POLLING)


def test_balloon(linux):
    check(linux, C.GUEST_BALLOON)


def test_report_times_follow_the_interval_and_its_countdown(linux):
    check(linux, C.GUEST_TIMING)


def test_held_back_balloon_change_keeps_the_time_it_was_made(linux):
    check(linux, C.GUEST_COALESCED)


def test_tmpfs_workload(linux):
    check(linux, C.GUEST_TMPFS)


def test_events_need_negotiation(linux):
    check(linux, C.GUEST_EVENTS_NEED_NEGOTIATION)


def test_system_reset(linux):
    check(linux, C.GUEST_RESET)
