"""Differential: QMP protocol, QOM and the balloon commands, real QEMU vs the emulator (no guest needed).

Each conversation (tests/differential/conversations.py) runs on a fresh connection to a real qemu-system-x86_64
and to ``balloonlab emulate`` started with the same command line and this QEMU's version profile; every answer is
compared by the rule its step names (tests/differential/compare.py).
"""

from __future__ import annotations

import pytest

from tests.differential import conversations as C
from tests.differential.targets import PROFILE_IDS, PROFILES, VMSpec, check, start_pair

pytestmark = pytest.mark.qemu


# Every fixture runs once per real QEMU: this machine's (7.2) and Debian 13's 10.0 when its tree is built.

@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def paused(request):
    """-S, balloon device, no guest: QEMU answers everything, nothing ever reports."""
    yield from start_pair(VMSpec(paused=True, qemu=request.param))


@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def running_nodriver(request):
    """Running, balloon device, no guest driver (real: no kernel at all; emulator: --guest nodriver)."""
    yield from start_pair(VMSpec(qemu=request.param))


@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def no_device(request):
    """-S, no balloon device, and 1 GiB (another RAM size than the other pairs)."""
    yield from start_pair(VMSpec(memory_mib=1024, device=False, paused=True, qemu=request.param))


@pytest.fixture(scope="module", params=PROFILES, ids=PROFILE_IDS)
def anonymous_device(request):
    """-S, ``-device virtio-balloon-pci`` without an id."""
    yield from start_pair(VMSpec(device_id="", paused=True, qemu=request.param))


@pytest.fixture(params=PROFILES, ids=PROFILE_IDS)
def fresh_no_device(request):
    """A VM of its own, for conversations that end it."""
    yield from start_pair(VMSpec(device=False, paused=True, qemu=request.param))


@pytest.mark.parametrize("conversation", C.PROTOCOL, ids=lambda c: c.name)
def test_protocol(paused, conversation):
    check(paused, conversation)


@pytest.fixture(params=PROFILES, ids=PROFILE_IDS)
def paused_single_client(request):
    """As ``paused``, with ``balloonlab emulate --single-client``."""
    yield from start_pair(VMSpec(paused=True, qemu=request.param, emulator_args=("--single-client",)))


def test_single_client_needs_no_documented_difference(paused_single_client):
    """With --single-client the "one client at a time" conversation agrees with QEMU outright."""
    assert check(paused_single_client, C.ONE_CLIENT_AT_A_TIME).allowed == []


@pytest.mark.parametrize("value", C.GOOD_INTERVALS + C.BAD_INTERVALS, ids=repr)
def test_polling_interval_value(paused, value):
    check(paused, C.polling_value(value))


@pytest.mark.parametrize("conversation", C.NODRIVER, ids=lambda c: c.name)
def test_running_without_driver(running_nodriver, conversation):
    check(running_nodriver, conversation)


def test_no_balloon_device(no_device):
    check(no_device, C.NO_DEVICE)


def test_device_without_id(anonymous_device):
    check(anonymous_device, C.ANONYMOUS_DEVICE)


def test_quit(fresh_no_device):
    check(fresh_no_device, C.QUIT)


@pytest.fixture(params=PROFILES, ids=PROFILE_IDS)
def fresh_paused(request):
    """A VM with the device, of its own, for conversations that break it."""
    yield from start_pair(VMSpec(paused=True, qemu=request.param))


def test_unrealize(fresh_paused):
    check(fresh_paused, C.UNREALIZE)


def test_run_states_then_quit(fresh_no_device):
    check(fresh_no_device, C.RUN_STATES)
