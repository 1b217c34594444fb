"""The balloon's virtio side: QEMU's default feature words (PAGE_POISON on, STATS_VQ always), the properties that
switch bits and queues, ``x-query-virtio``/``x-query-virtio-status`` string for string as QEMU 7.2 and 10.0 answer,
and the virtio part of ``x-balloonlab-status``.

The recorded answers below were taken from this machine's QEMU 7.2 (``-nodefaults -S -device
virtio-balloon-pci,id=balloon0``, and booted with balloonlab's Linux 6.1 guest) and Debian 13's QEMU 10.0 with the
same guest; the last test asks the real 7.2 again when it is installed.
"""

from __future__ import annotations

import json

import pytest

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.config import BalloonSpec, MachineConfig
from balloonlab.emulator.machine import Machine
from balloonlab.cli.emulate import parse_device
from balloonlab.emulator.virtio import FEATURES, feature_names
from balloonlab.errors import QMPError

P = "/machine/peripheral/balloon0"
BACKEND = P + "/virtio-backend"

_TRANSPORTS_72 = ('["VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled", "VIRTIO_RING_F_INDIRECT_DESC: '
                  'Indirect descriptors supported", "VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)", '
                  '"VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts", "VIRTIO_F_NOTIFY_ON_EMPTY: Notify '
                  'when device runs out of avail. descs. on VQ"]')
_HOST_72 = ('{"unknown-dev-features": 1100585369600, "dev-features": ["VIRTIO_BALLOON_F_PAGE_POISON: Guest page '
            'poisoning enabled", "VIRTIO_BALLOON_F_STATS_VQ: Guest memory stats VQ available"], "transports": '
            + _TRANSPORTS_72 + '}')
_STATUSES = ('["VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found", "VIRTIO_CONFIG_S_DRIVER: Guest OS '
             'compatible with device", "VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete", '
             '"VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready"]')


def _status(started: bool, statuses: str, guest: str, host: str, running: bool, queue_sel: int) -> str:
    j = json.dumps
    return ('{"device-endian": "little", "bus-name": "", "disable-legacy-check": false, "name": "virtio-balloon", '
            f'"started": {j(started)}, "device-id": 5, "backend-features": {{"dev-features": [], "transports": []}}, '
            '"start-on-kick": false, "isr": 0, "broken": false, "status": {"statuses": ' + statuses + '}, '
            '"num-vqs": 3, "guest-features": ' + guest + ', "host-features": ' + host + ', '
            f'"use-guest-notifier-mask": true, "vm-running": {j(running)}, "queue-sel": {queue_sel}, '
            '"disabled": false, "vhost-started": false, "use-started": true}')


#: QEMU 7.2, -S, no guest code run yet.
REAL_72_PRELAUNCH = _status(False, "[]", '{"dev-features": [], "transports": []}', _HOST_72, False, 0)
#: QEMU 7.2 running the Linux 6.1 guest (its driver acks RING_RESET, bit 40, which 7.2's table does not know).
REAL_72_GUEST = _status(
    True, _STATUSES,
    '{"unknown-dev-features": 1099511627776, "dev-features": ["VIRTIO_BALLOON_F_STATS_VQ: Guest memory stats VQ '
    'available"], "transports": ["VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled", "VIRTIO_F_VERSION_1: '
    'Device compliant for v1 spec (legacy)"]}', _HOST_72, True, 2)
#: QEMU 10.0 running the same guest.
REAL_100_GUEST = _status(
    True, _STATUSES,
    '{"dev-features": ["VIRTIO_BALLOON_F_STATS_VQ: Guest memory stats VQ available"], "transports": '
    '["VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled", "VIRTIO_F_RING_RESET: Driver can reset a queue '
    'individually", "VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)"]}',
    '{"unknown-dev-features": 1073741824, "dev-features": ["VIRTIO_BALLOON_F_PAGE_POISON: Guest page poisoning '
    'enabled", "VIRTIO_BALLOON_F_STATS_VQ: Guest memory stats VQ available"], "transports": ["VIRTIO_RING_F_EVENT_IDX: '
    'Used & avail. event fields enabled", "VIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported", '
    '"VIRTIO_F_RING_RESET: Driver can reset a queue individually", "VIRTIO_F_VERSION_1: Device compliant for v1 spec '
    '(legacy)", "VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts", "VIRTIO_F_NOTIFY_ON_EMPTY: Notify when '
    'device runs out of avail. descs. on VQ"]}', True, 2)


def make(version: str = "10.0", paused: bool = False, spec: BalloonSpec | None = None, **cfg) -> Machine:
    config = MachineConfig(ram_size=512 << 20, balloons=[spec or BalloonSpec(id="balloon0")], qemu_version=version,
                           clock="virtual", start_paused=paused, guest_kernel="6.1", **cfg)
    m = Machine(config, Clock("virtual", start_epoch=1_700_000_000.0))
    m.start()
    return m


def wire(value) -> str:
    return json.dumps(value)


@pytest.mark.parametrize("version,paused,expected", [
    ("7.2", True, REAL_72_PRELAUNCH), ("7.2", False, REAL_72_GUEST), ("10.0", False, REAL_100_GUEST)])
def test_x_query_virtio_status_as_real_qemu_answers(version, paused, expected):
    m = make(version, paused)
    assert wire(m.execute("x-query-virtio-status", {"path": BACKEND})) == expected
    # a partial path resolves as in QEMU
    assert m.execute("x-query-virtio-status", {"path": "balloon0/virtio-backend"})["name"] == "virtio-balloon"


def test_x_query_virtio_status_follows_the_driver_through_a_reset_and_cont():
    m = make("7.2", paused=True)
    m.execute("cont")
    m.execute("x-balloonlab-advance", {"seconds": 2})
    assert wire(m.execute("x-query-virtio-status", {"path": BACKEND})) == REAL_72_GUEST
    m.execute("system_reset")
    st = m.execute("x-query-virtio-status", {"path": BACKEND})
    assert (st["started"], st["status"], st["queue-sel"], st["guest-features"]) == (
        False, {"statuses": []}, 0, {"dev-features": [], "transports": []})


@pytest.mark.parametrize("version,what", [("7.2", "a VirtIODevice"), ("10.0", "a realized VirtIODevice")])
def test_x_query_virtio_status_errors(version, what):
    m = make(version)
    for path in (P, "/nope", "/machine"):
        with pytest.raises(QMPError) as e:
            m.execute("x-query-virtio-status", {"path": path})
        assert (e.value.error_class, e.value.desc) == ("GenericError", f"Path {path} is not {what}")
    with pytest.raises(QMPError, match="Parameter 'path' is missing"):
        m.execute("x-query-virtio-status", {})
    with pytest.raises(QMPError, match="Parameter 'bogus' is unexpected"):
        m.execute("x-query-virtio-status", {"path": BACKEND, "bogus": 1})


def test_x_query_virtio_lists_the_backend():
    assert wire(make().execute("x-query-virtio", {})) == (
        '[{"name": "virtio-balloon", "path": "/machine/peripheral/balloon0/virtio-backend"}]')


@pytest.mark.parametrize("props,offered,num_vqs", [
    ("", {"STATS_VQ", "PAGE_POISON"}, 3),
    ("page-poison=off", {"STATS_VQ"}, 3),
    ("deflate-on-oom=on", {"STATS_VQ", "PAGE_POISON", "DEFLATE_ON_OOM"}, 3),
    ("free-page-reporting=on", {"STATS_VQ", "PAGE_POISON", "REPORTING"}, 4),
    ("free-page-hint=off,free-page-reporting=on", {"STATS_VQ", "PAGE_POISON", "REPORTING"}, 4),
])
def test_properties_switch_feature_bits_and_queues(props, offered, num_vqs):
    spec = parse_device("virtio-balloon-pci,id=balloon0" + ("," + props if props else ""))
    m = make(spec=spec)
    dev = m.device
    names = {n.removeprefix("VIRTIO_BALLOON_F_") for n in feature_names(dev.host_features) if "BALLOON" in n}
    assert names == offered
    st = m.execute("x-query-virtio-status", {"path": BACKEND})
    assert st["num-vqs"] == num_vqs and dev.num_queues == num_vqs
    assert len(st["host-features"]["dev-features"]) == len(offered)
    assert m.execute("qom-get", {"path": P, "property": "page-poison"}) == ("page-poison=off" not in props)
    # Linux's driver acks what it knows except PAGE_POISON (no poisoning in the guest kernel)
    acked = {n.removeprefix("VIRTIO_BALLOON_F_") for n in feature_names(dev.guest_features) if "BALLOON" in n}
    assert acked == offered - {"PAGE_POISON"}


def test_balloonlab_status_carries_features_and_config():
    m = make()
    m.execute("balloon", {"value": 384 << 20})
    m.execute("x-balloonlab-advance", {"seconds": 2})
    (dev,) = m.execute("x-balloonlab-status", {})["devices"]
    host, guest = dev["host-features"], dev["guest-features"]
    assert host["mask"] == m.device.host_features and guest["mask"] == m.device.guest_features
    assert "VIRTIO_BALLOON_F_PAGE_POISON" in host["names"] and "VIRTIO_BALLOON_F_PAGE_POISON" not in guest["names"]
    assert host["mask"] >> FEATURES["VIRTIO_BALLOON_F_STATS_VQ"] & 1
    # QEMU's default page-poison=on exposes the whole 16-byte config (free_page_hint_cmd_id, poison_val: both 0)
    assert dev["config"] == {"num_pages": 32768, "actual": 32768, "bytes": "00800000008000000000000000000000"}
    assert (dev["device-status"], dev["num-queues"]) == (15, 3)


@pytest.mark.qemu
def test_against_a_real_qemu_without_a_guest(start_vm):
    """The real QEMU on this machine, -S, and the emulator with its version profile: the same answer."""
    from tests.fixtures.qemu import qmp_run

    vm = start_vm(guest=False, paused=True)
    real, listing = qmp_run(vm.qmp_socket, ("x-query-virtio-status", {"path": BACKEND}), "x-query-virtio")
    version = ".".join(vm.qemu_version.split(".")[:2])
    if version not in ("7.2", "10.0"):
        pytest.skip(f"no emulator profile for QEMU {vm.qemu_version}")
    m = make(version, paused=True)
    assert wire(m.execute("x-query-virtio-status", {"path": BACKEND})) == wire(real)
    assert wire(m.execute("x-query-virtio", {})) == wire(listing)
