"""The virtio-balloon device's polling state machine (spec B), driven through Machine on the virtual clock."""

from __future__ import annotations

import pytest

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.config import BalloonSpec, MachineConfig
from balloonlab.emulator.device import VirtioBalloon
from balloonlab.emulator.machine import Machine
from balloonlab.emulator.virtio import F_STATS_VQ, encode_stats
from balloonlab.errors import QMPError
from balloonlab.stats import UNSET

EPOCH = 1_700_000_000.0
P = "/machine/peripheral/balloon0"


def make(version="10.0", guest="linux", paused=False, **kw):
    clock = Clock("virtual", start_epoch=EPOCH)
    spec = BalloonSpec(id="balloon0", **{k: v for k, v in kw.items() if k in BalloonSpec.__dataclass_fields__})
    cfg = MachineConfig(ram_size=512 << 20, balloons=[spec], qemu_version=version, guest=guest,
                        start_paused=paused, clock="virtual",
                        **{k: v for k, v in kw.items() if k in ("guest_kernel", "seed")})
    m = Machine(cfg, clock)
    events: list[dict] = []
    m.add_event_listener(events.append)
    m.start()
    return m, clock, events


def polling(interval, **kw):
    """A machine booted on the virtual clock, 2 s in, with polling just switched on at ``interval`` s."""
    m, clock, events = make(**kw)
    clock.advance(2)
    poll(m, interval)
    return m, clock, events


def stats(m):
    return m.execute("qom-get", {"path": P, "property": "guest-stats"})


def poll(m, value):
    return m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": value})


def requests(m):
    return [e for e in m.execute("x-balloonlab-trace", {})["exchanges"] if e["kind"] == "request"]


def test_boot_report_without_polling_then_no_refresh():
    m, clock, _ = make()
    # start() on a virtual clock runs the 1 s boot: the driver loaded and parked its boot report
    first = stats(m)
    assert clock.vm_ns() == 1_000_000_000
    assert first["last-update"] == int(EPOCH) + 1
    assert first["stats"]["stat-total-memory"] != UNSET
    clock.advance(120)
    assert stats(m) == first and m.device.reports == 1
    assert requests(m) == []


def test_the_guest_needs_its_boot_time_after_cont():
    m, clock, _ = make(paused=True)
    m.execute("cont", {})
    clock.advance(0.9)
    assert stats(m)["last-update"] == 0
    clock.advance(0.2)
    assert stats(m)["last-update"] == int(EPOCH) + 1


def test_interval_one_polls_about_once_a_second():
    m, clock, _ = polling(1)
    clock.advance(10)
    assert 10 <= m.device.reports - 1 <= 11
    assert stats(m)["last-update"] >= int(EPOCH) + 11


def test_switching_on_polls_at_once_then_waits_a_full_interval():
    m, clock, _ = polling(30)
    assert len(requests(m)) == 1  # sent at once, within the qom-set
    clock.advance(0.5)
    assert m.device.reports == 2 and stats(m)["last-update"] == int(EPOCH) + 3
    clock.advance(29)
    assert m.device.reports == 2
    clock.advance(1)
    assert m.device.reports == 3


def test_same_value_again_is_a_no_op():
    m, clock, _ = polling(30)
    clock.advance(20)
    assert poll(m, 30) == {}
    clock.advance(10.1)  # still due 30 s after the first answer
    assert m.device.reports == 3


def test_new_value_restarts_the_countdown():
    m, clock, _ = polling(30)
    clock.advance(10)
    poll(m, 5)
    clock.advance(4.9)
    assert m.device.reports == 2
    clock.advance(0.2)
    assert m.device.reports == 3


def test_zero_destroys_the_timer_and_keeps_the_stats():
    m, clock, _ = polling(1)
    clock.advance(3)
    before = stats(m)  # read before the 0: reading after it would also accept stats the 0 wiped
    assert before["last-update"] != 0 and before["stats"]["stat-total-memory"] != UNSET
    assert poll(m, 0) == {}
    assert stats(m) == before, ("interval 0 must keep the last stats and last-update, as QEMU does "
                                "(docs/qemu-behaviour.md, B)")
    clock.advance(100)
    assert stats(m) == before and m.device.timer is None
    assert m.execute("qom-get", {"path": P, "property": "guest-stats-polling-interval"}) == 0


def test_late_answer_after_switching_off_still_updates_and_does_not_rearm():
    m, clock, _ = polling(1)
    clock.advance(0.001)  # the request is out, the guest answers 2 ms later
    assert m.device.statsq.holder == "guest"
    poll(m, 0)
    before = m.device.reports
    clock.advance(0.01)
    assert m.device.reports == before + 1 and m.device.statsq.holder == "device"
    clock.advance(60)
    assert m.device.reports == before + 1 and len(requests(m)) == 1


def test_a_guest_that_keeps_the_buffer_stops_polling_for_good():
    m, clock, _ = polling(1, guest="buggy")
    clock.advance(300)
    assert len(requests(m)) == 1 and m.device.reports == 1
    assert m.device.statsq.holder == "guest" and not m.device.timer.pending


def test_no_driver_means_unset_stats_and_a_timer_that_only_rearms():
    m, clock, _ = make(guest="nodriver")
    poll(m, 1)
    clock.advance(50)
    s = stats(m)
    assert s["last-update"] == 0 and set(s["stats"].values()) == {UNSET}
    assert m.device.timer.pending and requests(m) == []


def test_each_report_resets_stats_before_applying_it():
    clock = Clock("virtual", start_epoch=EPOCH)
    dev = VirtioBalloon(clock, 512 << 20, (10, 0))
    dev.driver_ok(F_STATS_VQ)
    dev.statsq.guest_add(encode_stats([(t, t + 1) for t in range(16)]))
    dev.statsq.device_return()
    dev.statsq.guest_add(encode_stats([(4, 1234), (5, 5678)]) + b"\x07\x00")  # partial entry ignored
    st = dev.guest_stats()["stats"]
    assert st["stat-free-memory"] == 1234 and st["stat-total-memory"] == 5678
    assert all(v == UNSET for k, v in st.items() if k not in ("stat-free-memory", "stat-total-memory"))


@pytest.mark.parametrize("value, message", [
    (-1, "timer value must be greater than zero"),
    (4294967296, "timer value is too big"),
    ("2", "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (1.5, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (2.0, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (True, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (None, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (2**64, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (2**63, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
    (2**63 - 1, "timer value is too big"),  # an int64: the visitor takes it, the range check refuses it
    (-2**63, "timer value must be greater than zero"),
    (-2**63 - 1, "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"),
])
def test_polling_interval_validation(value, message):
    m, _, _ = make()
    with pytest.raises(QMPError) as e:
        poll(m, value)
    assert (e.value.error_class, e.value.desc) == ("GenericError", message)
    assert m.execute("qom-get", {"path": P, "property": "guest-stats-polling-interval"}) == 0


@pytest.mark.parametrize("value", [2, 10, 0, 4294967295])
def test_polling_interval_accepted_values_read_back(value):
    m, _, _ = make()
    assert poll(m, value) == {}
    assert m.execute("qom-get", {"path": P, "property": "guest-stats-polling-interval"}) == value


def test_nothing_is_polled_while_paused():
    m, clock, events = polling(1)
    clock.advance(1)
    n = m.device.reports
    m.execute("stop", {})
    clock.advance(30)
    assert m.device.reports == n
    m.execute("cont", {})
    clock.advance(3)
    assert m.device.reports >= n + 2
    assert [e["event"] for e in events] == ["STOP", "RESUME"]


def test_started_paused_has_no_report_until_cont_even_with_polling():
    m, clock, _ = make(paused=True)
    poll(m, 1)
    clock.advance(60)
    assert stats(m)["last-update"] == 0
    assert m.execute("query-status", {}) == {"status": "prelaunch", "running": False}
    m.execute("cont", {})
    clock.advance(1.5)
    assert stats(m)["last-update"] == int(EPOCH) + 61


def test_polling_interval_from_the_command_line():
    m, clock, _ = make(polling_interval=2)
    clock.advance(10.5)
    assert m.execute("qom-get", {"path": P, "property": "guest-stats-polling-interval"}) == 2
    assert m.device.reports >= 4


@pytest.mark.parametrize("version, kept", [("7.2", True), ("9.2", True), ("10.0", False)])
def test_system_reset_keeps_or_clears_stats_by_version(version, kept):
    m, clock, events = make(version=version)
    clock.advance(2)
    before = stats(m)
    m.execute("system_reset", {})
    assert events[-1]["event"] == "RESET"
    assert events[-1]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    after = stats(m)
    if kept:
        assert after == before
    else:
        assert after["last-update"] == 0 and set(after["stats"].values()) == {UNSET}
    clock.advance(0.9)
    assert stats(m) == after  # rebooting
    clock.advance(0.2)  # the rebooted guest's driver reports again
    assert stats(m)["last-update"] == int(EPOCH) + 4


def test_wire_order_and_count_per_version():
    m72, c72, _ = make(version="7.2")
    m10, c10, _ = make(version="10.0", guest_kernel="6.1")
    for clock in (c72, c10):
        clock.advance(2)
    s72, s10 = stats(m72), stats(m10)
    assert list(s72) == ["stats", "last-update"]
    assert list(s72["stats"]) == ["stat-htlb-pgalloc", "stat-swap-out", "stat-available-memory",
                                  "stat-htlb-pgfail", "stat-free-memory", "stat-minor-faults",
                                  "stat-major-faults", "stat-total-memory", "stat-swap-in", "stat-disk-caches"]
    assert len(s10["stats"]) == 16
    # a 6.1 guest on 10.0: the six newer stats stay unset
    newer = ("oom-kills", "alloc-stalls", "async-scans", "direct-scans", "async-reclaims", "direct-reclaims")
    assert all(s10["stats"]["stat-" + k] == UNSET for k in newer)
    assert all(v != UNSET for k, v in s10["stats"].items() if k[5:] not in newer)


def test_qemu_72_ignores_tags_from_a_newer_guest():
    m, clock, _ = make(version="7.2", guest_kernel="6.12")
    clock.advance(2)
    report = m.execute("x-balloonlab-trace", {})["exchanges"][0]
    assert len(report["entries"]) == 16
    assert [e["ignored"] for e in report["entries"]] == [False] * 10 + [True] * 6
    assert len(stats(m)["stats"]) == 10


def test_a_day_of_one_second_polling():
    m, clock, _ = polling(1)
    clock.advance(86400)
    # one request per interval plus the guest's 2 ms answer: 86400 / 1.002
    assert 86000 <= m.device.reports <= 86401
    assert stats(m)["last-update"] >= int(EPOCH) + 86400


def _resets(events):
    return [(e["data"]["guest"], e["data"]["reason"]) for e in events if e["event"] == "RESET"]


def test_system_reset_is_followed_by_a_firmware_guest_reset_once_the_vm_runs():
    m, clock, events = make(version="7.2")
    m.execute("stop", {})
    m.execute("system_reset", {})
    clock.advance(5)
    assert _resets(events) == [(False, "host-qmp-system-reset")]  # paused: the firmware does not run
    m.execute("cont", {})
    clock.advance(0.05)
    assert _resets(events) == [(False, "host-qmp-system-reset")]
    clock.advance(0.02)  # 60 ms of VM time after the reset (real 7.2: one or two, 40-80 ms after)
    assert _resets(events) == [(False, "host-qmp-system-reset"), (True, "guest-reset")]


def test_guest_reboot_action():
    m, clock, events = make(version="10.0")
    m.execute("x-balloonlab-guest", {"action": "reboot"})
    assert _resets(events) == [(True, "guest-reset")]
    assert stats(m)["last-update"] == 0  # 10.0 clears the stats on every machine reset
    clock.advance(1.1)
    assert _resets(events) == [(True, "guest-reset")] * 2 and stats(m)["last-update"] == int(EPOCH) + 2


@pytest.mark.parametrize("value, message", [
    (2**63, "Invalid parameter type for 'value', expected: integer"),
    (-2**63 - 1, "Invalid parameter type for 'value', expected: integer"),
    (True, "Invalid parameter type for 'value', expected: integer"),
    (-2**63, "Parameter 'value' expects a size"),  # an int64: past the visitor, refused by the command
])
def test_command_int_arguments_share_the_int64_range_check(value, message):
    m, _, _ = make()
    with pytest.raises(QMPError) as e:
        m.execute("balloon", {"value": value})
    assert (e.value.error_class, e.value.desc) == ("GenericError", message)
    assert m.execute("balloon", {"value": 2**63 - 1}) == {}  # the largest int64 passes (clamped to RAM)


def test_no_request_while_stats_vq_is_not_acked():
    clock = Clock("virtual", start_epoch=EPOCH)
    clock.vm_start()
    dev = VirtioBalloon(clock, 512 << 20, (10, 0))
    dev.driver_ok(0)  # a driver without VIRTIO_BALLOON_F_STATS_VQ
    dev.statsq.guest_add(encode_stats([(4, 1)]))
    dev.set_poll_interval(1)
    clock.advance(5)
    assert dev.statsq.holder == "device" and dev.statsq.exchanges == 1  # never handed back, timer still armed
    assert dev.timer is not None and dev.timer.expire_ns > clock.vm_ns()  # it fired and re-armed each time
    assert clock.vm_ns() == 5 * 10**9


@pytest.mark.parametrize("props, size", [
    ({}, 16),                                                   # page-poison=on by default: the full struct
    ({"page_poison": False}, 8),                                # nothing that needs more: num_pages and actual
    ({"page_poison": False, "free_page_reporting": True}, 16),  # any of the three features: all four fields
])
def test_config_space_size_follows_qemus_virtio_balloon_config_size(props, size):
    m, _, _ = make(**props)
    config = m.execute("x-balloonlab-status", {})["devices"][0]["config"]
    assert len(bytes.fromhex(config["bytes"])) == size


def test_unplug_is_refused_in_the_documented_words_and_the_device_stays():
    """docs/differences.md (unplug-not-modelled) quotes this refusal; the differential test requires it exactly."""
    m, _, _ = make()
    with pytest.raises(QMPError) as e:
        m.execute("qom-set", {"path": P, "property": "realized", "value": False})
    assert (e.value.error_class, e.value.desc) == (
        "GenericError", "balloonlab emulator: unrealizing (unplugging) a device is not modelled")
    assert m.execute("qom-get", {"path": P, "property": "realized"}) is True
    assert m.execute("qom-set", {"path": P, "property": "realized", "value": True}) == {}
