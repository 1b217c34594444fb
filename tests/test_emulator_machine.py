"""The emulated machine's commands: QOM tree, errors string for string, versions, run state, balloon, vendor
commands.  Drives Machine.execute directly (the QMP server's own tests cover the wire)."""

from __future__ import annotations

import pytest

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.config import BalloonSpec, MachineConfig
from balloonlab.emulator.machine import Machine
from balloonlab.client.connection import _report_columns as report_columns
from balloonlab.errors import EmulatorOptionError, QMPError

EPOCH = 1_700_000_000.0
P = "/machine/peripheral/balloon0"
MiB = 1 << 20


def make(version="10.0", balloons=None, guest="linux", paused=False, clock="virtual"):
    clk = Clock(clock, start_epoch=EPOCH) if clock == "virtual" else Clock("real")
    cfg = MachineConfig(ram_size=512 * MiB, qemu_version=version, guest=guest, start_paused=paused, clock=clock,
                        balloons=[BalloonSpec(id="balloon0")] if balloons is None else balloons)
    m = Machine(cfg, clk)
    events: list[dict] = []
    m.add_event_listener(events.append)
    m.start()
    return m, clk, events


def error(m, command, arguments=None):
    with pytest.raises(QMPError) as e:
        m.execute(command, arguments or {})
    return e.value.error_class, e.value.desc


# -- QOM -------------------------------------------------------------------------------------------------------

def test_paths_by_id_anonymous_and_legacy():
    m, _, _ = make()
    assert m.device_path == P
    assert {"name": "balloon0", "type": "child<virtio-balloon-pci>"} in m.execute(
        "qom-list", {"path": "/machine/peripheral"})
    anon, _, _ = make(balloons=[BalloonSpec()])
    assert anon.device_path == "/machine/peripheral-anon/device[0]"
    legacy, _, _ = make(balloons=[BalloonSpec(legacy=True)])
    assert legacy.device_path == "/machine/peripheral-anon/device[1]"
    listing = legacy.execute("qom-list", {"path": "/machine/peripheral-anon"})
    assert {"name": "device[1]", "type": "child<virtio-balloon-pci>"} in listing
    assert any(e["name"] == "device[0]" and e["type"] != "child<virtio-balloon-pci>" for e in listing)
    assert legacy.execute("qom-get", {"path": "/machine/peripheral-anon/device[1]", "property": "type"}) \
        == "virtio-balloon-pci"


def test_proxy_lists_the_balloon_properties_with_their_types():
    m, _, _ = make()
    props = {e["name"]: e["type"] for e in m.execute("qom-list", {"path": P})}
    assert props["guest-stats"] == "guest statistics"
    assert props["guest-stats-polling-interval"] == "int"
    assert props["virtio-backend"] == "child<virtio-balloon-device>"
    for name in ("deflate-on-oom", "free-page-hint", "free-page-reporting", "page-poison", "qemu-4-0-config-size",
                 "iothread", "type"):
        assert name in props
    assert len(props) > 30  # and many generic PCI/virtio ones
    assert m.execute("qom-get", {"path": P, "property": "type"}) == "virtio-balloon-pci"
    assert m.execute("qom-get", {"path": P + "/virtio-backend", "property": "type"}) == "virtio-balloon-device"
    assert m.execute("qom-get", {"path": P, "property": "virtio-backend"}) == P + "/virtio-backend"


def test_backend_and_proxy_share_the_device_state():
    m, _, _ = make()
    m.execute("qom-set", {"path": P + "/virtio-backend", "property": "guest-stats-polling-interval", "value": 7})
    assert m.execute("qom-get", {"path": P, "property": "guest-stats-polling-interval"}) == 7


def test_partial_path_resolves_when_unique():
    m, _, _ = make()
    assert m.execute("qom-get", {"path": "balloon0", "property": "type"}) == "virtio-balloon-pci"
    assert error(m, "qom-list", {"path": "nope"}) == ("DeviceNotFound", "Device 'nope' not found")


@pytest.mark.parametrize("command, arguments, expected", [
    ("qom-get", {"path": "/machine/peripheral/nope", "property": "type"},
     ("DeviceNotFound", "Device '/machine/peripheral/nope' not found")),
    ("qom-get", {"path": P, "property": "nope"}, ("GenericError", "Property 'virtio-balloon-pci.nope' not found")),
    ("qom-set", {"path": P, "property": "stats-polling-interval", "value": 0},
     ("GenericError", "Property 'virtio-balloon-pci.stats-polling-interval' not found")),
    ("qom-set", {"path": P, "property": "guest-stats", "value": {}},
     ("GenericError", "Property 'virtio-balloon-device.guest-stats' is not writable")),
    ("qom-set", {"path": P, "property": "type", "value": "x"},
     ("GenericError", "Property 'virtio-balloon-pci.type' is not writable")),
    ("qom-set", {"path": P, "property": "addr", "value": 3},
     ("GenericError",
      "Attempt to set property 'addr' on device 'balloon0' (type 'virtio-balloon-pci') after it was realized")),
    ("qom-get", {"path": P}, ("GenericError", "Parameter 'property' is missing")),
    ("qom-get", {"path": P, "property": "type", "bogus": 1}, ("GenericError", "Parameter 'bogus' is unexpected")),
    ("qom-get", {"path": 5, "property": "type"},
     ("GenericError", "Invalid parameter type for 'path', expected: string")),
    ("no-such-command", {}, ("CommandNotFound", "The command no-such-command has not been found")),
    ("query-status", {"x": 1}, ("GenericError", "Parameter 'x' is unexpected")),
])
def test_errors_are_worded_as_qemu_words_them(command, arguments, expected):
    m, _, _ = make()
    assert error(m, command, arguments) == expected


# -- versions and run state ------------------------------------------------------------------------------------

def test_greeting_and_query_version_per_profile():
    for version, triple, package in (("7.2", (7, 2, 22), "Debian 1:7.2+dfsg-7+deb12u18+b3"),
                                     ("10.0", (10, 0, 13), "Debian 1:10.0.13+ds-0+deb13u1"),
                                     ("9.2", (9, 2, 1), "Debian 1:9.2.1+ds-1")):
        m, _, _ = make(version=version)
        v = {"qemu": {"micro": triple[2], "minor": triple[1], "major": triple[0]}, "package": package}
        assert m.greeting() == {"QMP": {"version": v, "capabilities": ["oob"]}}
        assert list(m.greeting()["QMP"]["version"]["qemu"]) == ["micro", "minor", "major"]  # QEMU's order
        assert m.execute("query-version", {}) == v


def test_query_status_per_version_and_run_state_events():
    m72, _, _ = make(version="7.2")
    assert list(m72.execute("query-status", {}).items()) == [
        ("status", "running"), ("singlestep", False), ("running", True)]
    m, _, events = make(version="10.0", paused=True)
    assert m.execute("query-status", {}) == {"status": "prelaunch", "running": False}
    m.execute("stop", {})  # not running: no event
    m.execute("cont", {})
    m.execute("cont", {})  # already running: no event
    m.execute("stop", {})
    assert m.execute("query-status", {}) == {"status": "paused", "running": False}
    assert [e["event"] for e in events] == ["RESUME", "STOP"]
    assert all(list(e) == ["timestamp", "event"] and list(e["timestamp"]) == ["seconds", "microseconds"]
               for e in events)
    assert events[0]["timestamp"] == {"seconds": int(EPOCH), "microseconds": 0}


def test_quit_emits_shutdown_then_calls_on_quit():
    m, _, events = make()
    calls = []
    m.on_quit = lambda: calls.append(events[-1]["event"])
    assert m.execute("quit", {}) == {}
    assert calls == ["SHUTDOWN"]
    assert events[-1]["data"] == {"guest": False, "reason": "host-qmp-quit"}


def test_query_commands_and_memory_summary():
    m, _, _ = make()
    names = {c["name"] for c in m.execute("query-commands", {})}
    assert {"qom-get", "qom-set", "balloon", "query-balloon", "x-balloonlab-advance", "x-balloonlab-trace",
            "x-balloonlab-reports",
            "x-balloonlab-guest", "x-balloonlab-status", "qmp_capabilities"} <= names
    assert m.execute("query-memory-size-summary", {}) == {"base-memory": 512 * MiB, "plugged-memory": 0}


def test_config_errors():
    with pytest.raises(EmulatorOptionError, match="Only one balloon device"):
        make(balloons=[BalloonSpec(id="a"), BalloonSpec(id="b")])
    with pytest.raises(EmulatorOptionError, match="version"):
        make(version="1.0")
    with pytest.raises(EmulatorOptionError, match="guest model"):
        make(guest="plan9")


# -- balloon ------------------------------------------------------------------------------------------------------

def test_no_balloon_device():
    m, _, _ = make(balloons=[])
    assert error(m, "query-balloon") == ("DeviceNotActive", "No balloon device has been activated")
    # DeviceNotActive comes before the size check
    assert error(m, "balloon", {"value": 0}) == ("DeviceNotActive", "No balloon device has been activated")
    assert m.execute("x-balloonlab-status", {})["devices"] == []


@pytest.mark.parametrize("version, name", [("7.2", "target"), ("9.2", "value"), ("10.0", "value")])
def test_balloon_size_errors_per_version(version, name):
    m, _, _ = make(version=version)
    for value in (0, -5):
        assert error(m, "balloon", {"value": value}) == ("GenericError", f"Parameter '{name}' expects a size")
    assert error(m, "balloon", {"value": "256M"}) == (
        "GenericError", "Invalid parameter type for 'value', expected: integer")
    assert error(m, "balloon", {}) == ("GenericError", "Parameter 'value' is missing")


def test_balloon_moves_actual_with_rate_limited_events():
    m, clock, events = make()
    clock.advance(2)
    assert m.execute("query-balloon", {}) == {"actual": 512 * MiB}
    assert m.execute("balloon", {"value": 256 * MiB}) == {}
    assert m.execute("query-balloon", {}) == {"actual": 512 * MiB}  # only the guest moves it
    clock.advance(0.5)
    changes = [e for e in events if e["event"] == "BALLOON_CHANGE"]
    assert len(changes) == 1 and changes[0]["data"]["actual"] == 511 * MiB  # the first at once
    clock.advance(1)
    changes = [e for e in events if e["event"] == "BALLOON_CHANGE"]
    assert [c["data"]["actual"] for c in changes] == [511 * MiB, 256 * MiB]  # the rest coalesced, last wins
    assert m.execute("query-balloon", {}) == {"actual": 256 * MiB}
    clock.advance(30)
    assert len([e for e in events if e["event"] == "BALLOON_CHANGE"]) == 2
    # a second change after the quiet period is sent at once again
    m.execute("balloon", {"value": 512 * MiB})
    clock.advance(0.01)
    assert [e for e in events if e["event"] == "BALLOON_CHANGE"][-1]["data"]["actual"] == 257 * MiB


def test_balloon_above_ram_is_clamped_back_to_full_size():
    m, clock, _ = make()
    clock.advance(2)
    m.execute("balloon", {"value": 300 * MiB})
    clock.advance(5)
    assert m.execute("query-balloon", {}) == {"actual": 300 * MiB}
    m.execute("balloon", {"value": 4096 * MiB})
    clock.advance(5)
    assert m.execute("query-balloon", {}) == {"actual": 512 * MiB}


def test_balloon_while_paused_does_not_move_actual():
    m, clock, events = make(paused=True)
    assert m.execute("balloon", {"value": 256 * MiB}) == {}
    clock.advance(60)
    assert m.execute("query-balloon", {}) == {"actual": 512 * MiB}
    assert not [e for e in events if e["event"] == "BALLOON_CHANGE"]
    m.execute("cont", {})
    clock.advance(5)
    assert m.execute("query-balloon", {}) == {"actual": 256 * MiB}


def test_guest_without_driver_never_moves_actual():
    m, clock, _ = make(guest="nodriver")
    m.execute("balloon", {"value": 128 * MiB})
    clock.advance(60)
    assert m.execute("query-balloon", {}) == {"actual": 512 * MiB}


# -- vendor commands --------------------------------------------------------------------------------------------

def test_advance_status_and_trace_commands():
    m, _, _ = make()
    assert m.execute("x-balloonlab-advance", {"seconds": 1.5}) == {}
    assert m.execute("x-balloonlab-advance", {"seconds": 1}) == {}
    st = m.execute("x-balloonlab-status", {})
    (dev,) = st.pop("devices")
    assert st.pop("host-swapped") == 0 and st.pop("host-rss") > 0  # the host side: tests/test_host_memory.py
    assert st == {"clock": "virtual", "guest": "linux", "qemu-version": "10.0", "vm-clock-ns": 3_500_000_000,
                  "running": True, "wall-clock": EPOCH + 3.5}
    assert {k: dev[k] for k in ("path", "statsq-holder", "exchanges")} == {
        "path": P, "statsq-holder": "device", "exchanges": 1}  # features and config: test_emulator_virtio_qmp.py
    trace = m.execute("x-balloonlab-trace", {"path": P})
    assert trace["next"] == 1 and trace["exchanges"][0]["kind"] == "report"
    assert trace["exchanges"][0]["vm-clock-ns"] == 1_000_000_000
    assert m.execute("x-balloonlab-trace", {"since": 1})["exchanges"] == []
    assert error(m, "x-balloonlab-trace", {"path": "/machine"}) == (
        "GenericError", "'/machine' is not a virtio-balloon device")
    assert error(m, "x-balloonlab-advance", {"seconds": -1})[0] == "GenericError"
    assert error(m, "x-balloonlab-advance", {"seconds": "1s"}) == (
        "GenericError", "Invalid parameter type for 'seconds', expected: number")


def test_the_report_log_holds_what_guest_stats_showed_after_each_report():
    m, _, _ = make(version="7.2")
    first = m.execute("x-balloonlab-reports", {"path": P})
    assert first["rows"] == "" and first["next"] == first["first"]  # the first call starts the log
    m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": 2})
    shown = []
    for _ in range(5):
        m.execute("x-balloonlab-advance", {"seconds": 2})
        shown.append(m.execute("qom-get", {"path": P, "property": "guest-stats"}))
    log = m.execute("x-balloonlab-reports", {"since": first["next"]})
    assert log["next"] == first["next"] + 5 and log["first"] == first["first"]
    assert log["columns"] == ["wall-ns", "last-update", *shown[0]["stats"]]  # QEMU 7.2's ten stats, in wire order
    cols = report_columns(log)
    assert [{"stats": {k: cols[k][i] for k in log["columns"][2:]}, "last-update": cols["last-update"][i]}
            for i in range(5)] == shown
    assert [t // 10**9 for t in cols["wall-ns"]] == list(cols["last-update"])
    assert m.execute("x-balloonlab-reports", {"since": log["next"]})["rows"] == ""
    assert error(m, "x-balloonlab-reports", {"path": "/machine"}) == (
        "GenericError", "'/machine' is not a virtio-balloon device")


def test_the_report_log_is_bounded_and_tells_a_late_reader_where_it_starts():
    from balloonlab.emulator.reportlog import REPORT_LOG_LENGTH

    m, _, _ = make()
    start = m.execute("x-balloonlab-reports", {})["next"]
    m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": 1})
    m.execute("x-balloonlab-advance", {"seconds": REPORT_LOG_LENGTH + 10})
    log = m.execute("x-balloonlab-reports", {"since": start})
    times = list(report_columns(log)["wall-ns"])
    assert log["first"] > start and len(times) == log["next"] - log["first"] <= REPORT_LOG_LENGTH
    assert times == sorted(times)


def test_advance_needs_the_virtual_clock():
    m, _, _ = make(clock="real")
    assert error(m, "x-balloonlab-advance", {"seconds": 1}) == (
        "GenericError", "x-balloonlab-advance needs the virtual clock (start the emulator with clock=virtual)")
    m.shutdown()


def test_guest_command_errors():
    m, _, _ = make()
    assert error(m, "x-balloonlab-guest", {})[1] == "Parameter 'action' is missing"
    cls, desc = error(m, "x-balloonlab-guest", {"action": "dance"})
    assert cls == "GenericError" and "unknown action 'dance'" in desc and "allocate" in desc
    assert "size" in error(m, "x-balloonlab-guest", {"action": "allocate"})[1]
    assert "not a size" in error(m, "x-balloonlab-guest", {"action": "allocate", "size": "lots"})[1]
    assert "unexpected" in error(m, "x-balloonlab-guest", {"action": "idle", "size": 1})[1]


def test_shutdown_cancels_every_timer():
    m, clock, _ = make()
    m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": 1})
    m.execute("balloon", {"value": 100 * MiB})
    assert clock.pending_timers() > 0
    m.shutdown()
    assert clock.pending_timers() == 0


def test_real_clock_machine_boots_and_polls_on_its_own():
    import asyncio

    async def scenario():
        clock = Clock("real", asyncio.get_running_loop())
        m = Machine(MachineConfig(ram_size=512 * MiB, balloons=[BalloonSpec(id="balloon0")]), clock)
        try:
            m.start()
            m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": 1})
            for _ in range(1000):  # deadline about 10 s; normally about 2 s
                if m.device.reports >= 3:
                    break
                await asyncio.sleep(0.01)
            assert m.device.reports >= 3
            assert m.execute("qom-get", {"path": P, "property": "guest-stats"})["last-update"] > 0
        finally:
            m.shutdown()
        assert clock.pending_timers() == 0

    asyncio.run(scenario())


def test_qdict_order_reproduces_qemus_observed_key_orders():
    from balloonlab.emulator.jsonstream import qdict_ordered
    from balloonlab.stats import STATS, WIRE_ORDER_10, WIRE_ORDER_16

    def order(keys):
        return tuple(qdict_ordered(dict.fromkeys(keys)))

    # QEMU inserts the stats in tag order; its QDict hash gives the order observed on the wire
    assert order("stat-" + s.key for s in STATS) == tuple("stat-" + k for k in WIRE_ORDER_16)
    assert order("stat-" + s.key for s in STATS[:10]) == tuple("stat-" + k for k in WIRE_ORDER_10)
    assert order(["major", "minor", "micro"]) == ("micro", "minor", "major")
    assert order(["running", "status"]) == ("status", "running")


def test_one_advance_and_the_number_of_workloads_are_bounded():
    """Client input cannot make one command run for hours, nor every report walk an unbounded list."""
    m, _, _ = make()
    assert error(m, "x-balloonlab-advance", {"seconds": 1e9}) == (
        "GenericError", "x-balloonlab-advance: at most 2678400 seconds (31 days) at a time; advance in steps")
    for _ in range(64):
        m.execute("x-balloonlab-guest", {"action": "cache", "size": "1M", "duration": "1h"})
    cls, desc = error(m, "x-balloonlab-guest", {"action": "cache", "size": "1M", "duration": "1h"})
    assert cls == "GenericError" and "64 workloads are still running" in desc
    m.execute("x-balloonlab-guest", {"action": "idle"})
    m.execute("x-balloonlab-guest", {"action": "cache", "size": "1M", "duration": "1h"})  # room again


def test_held_back_balloon_change_keeps_the_timestamp_of_when_it_was_made():
    """QEMU queues the event dict it built, timestamp included (monitor_qapi_event_queue_no_reenter), so the
    change sent at the end of the rate-limit second says when the guest made it, not when it went out."""
    m, clock, events = make()
    clock.advance(2)
    sent_at = clock.wall_time()
    m.execute("balloon", {"value": 510 * MiB})  # two 256-page chunks: two changes 2 ms apart
    clock.advance(2)
    first, second = [e for e in events if e["event"] == "BALLOON_CHANGE"]
    assert (first["data"]["actual"], second["data"]["actual"]) == (511 * MiB, 510 * MiB)
    stamp = lambda e: e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6  # noqa: E731
    assert stamp(first) - sent_at < 0.05
    assert 0 < stamp(second) - stamp(first) < 0.05, "held back for a second, but stamped when the guest made it"
