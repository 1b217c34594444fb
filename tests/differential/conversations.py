"""The conversations of the differential suite (spec A, one per behaviour), grouped by the VM they need.

Every conversation starts on a fresh connection, so the ones that share a VM must leave it as they found it
(polling off, balloon target at full RAM) -- each one ends by restoring what it changed.
"""

from __future__ import annotations

from typing import Any

from .conversation import (SYNC, Conversation, Events, GuestRun, Handover, Pause, Poll, QomWalk, Quit, ReportTimes,
                           SecondClient, Send, command)

DEVICE = "/machine/peripheral/balloon0"
INTERVAL = "guest-stats-polling-interval"
MIB = 1 << 20


def qom_get(prop: str, path: str = DEVICE, **step: Any) -> Send:
    return command("qom-get", {"path": path, "property": prop}, **step)


def qom_set(prop: str, value: Any, path: str = DEVICE, **step: Any) -> Send:
    return command("qom-set", {"path": path, "property": prop, "value": value}, **step)


def stats(**step: Any) -> Send:
    step.setdefault("rule", "stats")
    return qom_get("guest-stats", **step)


STATS_MESSAGE = {"execute": "qom-get", "arguments": {"path": DEVICE, "property": "guest-stats"}}


def _last_update(reply: dict) -> int:
    return reply.get("return", {}).get("last-update", 0)


def moved_from(name: str):
    """Poll condition: guest-stats' last-update is set and differs from the reply saved as ``name``."""
    return lambda reply, saved: 0 < _last_update(reply) != _last_update(saved[name])


def reported(reply: dict, saved: dict) -> bool:
    return _last_update(reply) > 0


def poll_moved(name: str, deadline: float, expect: bool, label: str, save: str | None = None) -> Poll:
    return Poll(STATS_MESSAGE, moved_from(name), deadline, label, expect=expect, save=save)


def _last_actual_is(value: int):
    """Events condition: the latest BALLOON_CHANGE says ``actual`` = value."""
    def ok(events: list[dict]) -> bool:
        changes = [e for e in events if e["event"] == "BALLOON_CHANGE"]
        return bool(changes) and changes[-1]["data"]["actual"] == value
    return ok


# --------------------------------------------------------------------------------------------------------------
# Protocol: a paused VM (-S) with the balloon device and no guest.

GREETING = Conversation("greeting", negotiate=False, steps=[
    command("qmp_capabilities"),
    command("query-version", allow=("qemu-point-release",)),
    command("query-status"),
])

PRE_NEGOTIATION = Conversation("pre-negotiation", negotiate=False, steps=[
    command("query-status", id="early"),
    command("no-such-command"),
    command("balloon", {"value": 1}),
    Send({"execute": "query-status", "bogus": 1}, replies=SYNC),
    command("qmp_capabilities", id=1),
    command("qmp_capabilities", id=2, label="second qmp_capabilities"),
    command("query-status"),
])

NEGOTIATION_ARGUMENTS = Conversation("qmp_capabilities arguments", negotiate=False, steps=[
    Send({"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}, replies=SYNC),
    Send({"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}, replies=SYNC),
    Send({"execute": "qmp_capabilities", "arguments": {"bogus": 1}}, replies=SYNC),
    Send({"exec-oob": "query-status", "id": 0}, replies=SYNC, label="exec-oob before negotiation"),
    command("qmp_capabilities", {"enable": []}),
    command("query-status"),
])

OUT_OF_BAND = Conversation("out-of-band enabled", negotiate=False, steps=[
    command("qmp_capabilities", {"enable": ["oob"]}),
    Send({"exec-oob": "query-status", "id": 1}, replies=SYNC),
    Send({"exec-oob": "query-status"}, replies=SYNC),
    Send({"exec-oob": "no-such-command", "id": 5}, replies=SYNC),
    Send({"execute": "query-status", "exec-oob": "query-status", "id": 2}, replies=SYNC),
    Send({"exec-oob": 5}, replies=SYNC),
    command("qmp_capabilities", {"enable": ["oob"]}, label="again"),
    command("query-status"),
])

ONE_CLIENT_AT_A_TIME = Conversation("one client at a time", steps=[
    SecondClient(),
    command("query-status"),
    Handover(),
    command("query-status", label="not negotiated yet"),
    command("qmp_capabilities"),
    command("query-status", label="negotiated"),
])

UNKNOWN_COMMAND = Conversation("unknown-command", steps=[
    command("no-such-command"),
    command("no-such-command", {"a": 1}, id="x"),
    command("Query-Status", label="command names are case-sensitive"),
    command("query_status", label="no dash/underscore folding"),
])

#: Every JSON type as an ``id`` (and numbers at the edges of int64 and double).
IDS: list[Any] = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**29, 1.5, -0.25, 0.1,
                  -0.0, 100.0, 1e-7, 5e-324, 1e300, "", "id", "é", "\U0001F600", "a\"b\\c\n", "x" * 100000,
                  True, False, None, [], [1, "a", None], {}, {"a": {"b": [1.5]}}]

ID_ECHO = Conversation("id-echo", steps=[command("query-status", id=i, label=f"id {i!r}"[:60]) for i in IDS])

ARGUMENTS = Conversation("arguments", steps=[
    command("query-status", {"bogus": 1}),
    command("query-balloon", {"bogus": 1, "other": 2}),
    command("qom-get", {"path": DEVICE, "property": "type", "bogus": 1}),
    command("qom-get", {"path": DEVICE}),
    command("qom-get", {"property": "type"}),
    command("qom-get", {}),
    command("qom-get"),
    command("qom-get", {"path": 1, "property": "type"}),
    command("qom-get", {"path": DEVICE, "property": ["type"]}),
    command("qom-set", {"path": DEVICE, "property": INTERVAL}),
    command("qom-list"),
    command("qom-list", {"path": None}),
    command("balloon"),
    command("balloon", {"value": 1 << 30, "bogus": 1}),
    command("stop", {"bogus": 1}),
    command("system_reset", {"bogus": 1}),
])

MALFORMED = Conversation("malformed", steps=[
    Send(m, replies=SYNC) for m in (
        [1, 2], [], "query-status", 5, None, True, {},
        {"exec": "query-status"},
        {"execute": 5},
        {"execute": None},
        {"execute": "query-status", "arguments": []},
        {"execute": "query-status", "arguments": "x"},
        {"execute": "query-status", "arguments": None},
        {"execute": "query-status", "x": 1},
        {"execute": "query-status", "x": 1, "y": 2},
        {"arguments": {}},
        {"id": 7},
        {"exec-oob": "query-status"},
        {"execute": "query-status", "exec-oob": "query-status"},
        {"execute": "query-status", "control": {}},
    )
] + [command("query-status", label="still usable")])

BROKEN_JSON = Conversation("broken-json", steps=[
    Send(m, replies=SYNC) for m in (
        b'{"execute": }',
        b'{"execute": "query-status", "id": 1,}',
        b'{"execute": "query-status", "id": tru}',
        b'{"execute": "query-status", "id": "\\x"}',
        b'{"execute": "query-status" "id": 1}',
        b'{"execute": "query-status", "id": 01}',
        b'{"execute": "query-status", "id": 1}}',
        b"}}}",
        b"]",
        b"{'execute': 'query-status'}",
        b'{"execute": "query-status", "id": 1e}',
        b"@",
        b"\x01",
        b"\x00",
        b'\xef\xbb\xbf{"execute": "query-status", "id": "bom"}',
        b'{"execute": "query-status", "execute": "query-balloon"}',
        b'{"execute": "query-status", "arguments": {"a": 1, "a": 2}}',
        b'{"execute": "query-status", "id": "\\ud800"}',
        b'{"execute": "query-status", "id": "\xff"}',
        b'{"execute": "query-status", "id": "\xc3"}',
        b'{"execute": "query-status", "id": "a\x01b"}',
        b'{"execute":\t"query-status",\r"id":\x0c1}',
        b"[" * 1100 + b"]" * 1100,
        b'{"execute": "query-status", "id": ' + b"[" * 1030 + b"]" * 1030 + b"}",
    )
] + [command("query-status", label="still usable")])

SPLIT = Conversation("split", steps=[
    Send(b'{"execute":\n "query-status",\n "id":\n 1}\n', label="object over four lines"),
    Send(b'{"execute": "qom-get", "arguments": {"path": ', replies=0, label="first half, no newline"),
    Send(b'"' + DEVICE.encode() + b'", "property": "type"}, "id": "split"}', label="second half"),
    Send(b'{"execute": "query-status", "id": "a"}{"execute": "query-balloon", "id": "b"}', replies=2,
         label="two commands in one write"),
    Send(b'\n\n  {"execute": "query-status", "id": "ws"}  \n', label="surrounding whitespace"),
    Send(b'{"execute": "query-status", "id": "\xc3', replies=0, label="write ends inside a UTF-8 character"),
    Send(b'\xa9"}', label="the rest of it"),
    Send(b'{"execute": "query-status", "id": "\\u00', replies=0, label="write ends inside an escape"),
    Send(b'e9"}', label="the rest of the escape"),
    Send(b'{"execute": "query-status", "id": 12', replies=0, label="write ends inside a number"),
    Send(b'34}', label="the rest of the number"),
    Send(b'{"execute": "query-status", "id": 1}{"execute": "query-status", "id": 2}{"execute": "query-st',
         replies=2, label="two and a half commands"),
    Send(b'atus", "id": 3}', label="the other half"),
    Send(b"".join(b'{"execute": "%s", "id": %d}' % (name, i) for i, name in
                  enumerate([b"query-status", b"query-balloon", b"no-such-command", b"qom-list"] * 50)),
         replies=200, label="200 pipelined commands in one write, answered in order"),
])

FRAMING = Conversation("framing", steps=[
    command("query-status", rule="raw", label="raw: query-status"),
    command("query-status", id="é", rule="raw", label="raw: non-ASCII id"),
    command("query-status", id=2**64, rule="raw", label="raw: id beyond int64"),
    command("query-status", id=1e300, rule="raw", label="raw: large double id"),
    command("query-status", id="tab\there", rule="raw", label="raw: control character in id"),
    command("query-status", id="\U0001F600", rule="raw", label="raw: astral character in id"),
    command("é", rule="raw", label="raw: non-ASCII command name"),
    Send(b'{"execute": "query-status", "id": "\\u0000"}', rule="raw", label="raw: NUL escape in id"),
    Send(b'{"execute": "query-status", "id": "\xf0\x9f\x98\x80"}', rule="raw", label="raw: UTF-8 id"),
    Send(b'{"execute": "query-status", "id": 1E2}', rule="raw", label="raw: exponent id"),
    Send(b'{"execute": "query-status", "id": -0}', rule="raw", label="raw: minus zero integer"),
    Send(b'{"execute": "query-status", "id": -0.0}', rule="raw", label="raw: minus zero double"),
    Send(b'{"execute": "query-status", "id": 0.1}', rule="raw", label="raw: 0.1"),
    Send(b'{"execute": "query-status", "id": 1e-7}', rule="raw", label="raw: 1e-7"),
    Send(b'{"execute": "query-status", "id": 100.0}', rule="raw", label="raw: 100.0"),
    Send(b'{"execute": "query-status", "id": 123456789012345678901234567890}', rule="raw", label="raw: 10**29"),
    command("no-such-command", rule="raw", label="raw: error reply"),
    stats(rule="raw", label="raw: guest-stats with no report"),
])

QOM = Conversation("qom", steps=[
    command("qom-list", {"path": "/machine/peripheral"}),
    command("qom-list", {"path": DEVICE}, allow=("qom-listing-newer-qemu",)),
    qom_get("type"),
    qom_get(INTERVAL),
    command("qom-list", {"path": DEVICE + "/virtio-backend"}, allow=("qom-listing-newer-qemu",)),
    command("qom-list", {"path": "/machine"}, allow=("qom-listing-newer-qemu",)),
    qom_get("type", DEVICE + "/virtio-backend"),
    qom_get(INTERVAL, DEVICE + "/virtio-backend"),
    qom_get("deflate-on-oom"),
    qom_get("free-page-reporting"),
    qom_get("free-page-hint"),
    stats(path=DEVICE + "/virtio-backend", rule="exact", label="guest-stats on the backend"),
    command("query-commands", allow=("query-commands-subset",)),
])

QOM_WALK = Conversation("qom walk", steps=[
    QomWalk(DEVICE, set_current=True, allow=("qom-listing-newer-qemu",)),
    QomWalk(DEVICE + "/virtio-backend", set_current=True, allow=("qom-listing-newer-qemu",)),
    QomWalk("/machine/peripheral", set_current=True),
    command("query-status", label="nothing changed"),
])

#: Values for guest-stats-polling-interval: spec A lists each answer.
GOOD_INTERVALS = [2, 10, 0, 4294967295]
BAD_INTERVALS = [-1, 4294967296, "2", 1.5, True, None, 2**64,
                 # edges of QEMU's int64 visitor and JSON number parsing
                 2**63 - 1, -(2**63), 2**63, 1.0, 1e3, [], {}]


def polling_value(value: Any) -> Conversation:
    """qom-set one value, read it back, and turn polling off again."""
    return Conversation(f"polling-interval {value!r}", steps=[
        qom_get(INTERVAL, label="before"),
        qom_set(INTERVAL, value),
        qom_get(INTERVAL, label="after"),
        qom_set(INTERVAL, 0, label="restore 0"),
    ])


POLLING_BACKEND_PATH = Conversation("polling-interval on the backend path", steps=[
    qom_set(INTERVAL, 5, DEVICE + "/virtio-backend"),
    qom_get(INTERVAL, label="read on the proxy"),
    qom_set(INTERVAL, 0, label="restore 0"),
    qom_get(INTERVAL, DEVICE + "/virtio-backend"),
])

PROPERTIES = Conversation("properties", steps=[
    qom_get("stats-polling-interval", label="old doc's misspelt property (get)"),
    qom_set("stats-polling-interval", 0, label="old doc's misspelt property (set)"),
    qom_get("nope"),
    qom_set("nope", 1),
    qom_set("guest-stats", {}),
    qom_set("guest-stats", 1),
    qom_set("type", "x"),
    qom_get("guest-stats", "/machine/peripheral/nope"),
    qom_set(INTERVAL, 2, "/machine/peripheral/nope"),
    command("qom-list", {"path": "/machine/peripheral/nope"}),
    qom_get("type", "/machine/peripheral/balloon0/"),
    qom_get("type", "balloon0", label="partial path"),
    qom_get("type", "device[0]", label="partial path into /machine/unattached", allow=("qom-skeleton",)),
    qom_get("type", "virtio-backend", label="partial path to the backend"),
    qom_get("type", "", label="empty path (qom-get)"),
    command("qom-list", {"path": ""}, label="empty path (qom-list)"),
    qom_get("type", "/"),
    qom_get("type", "//machine", label="doubled slash"),
    qom_get("type", "/machine/./peripheral/balloon0", label="dot component"),
    qom_get("", label="empty property name"),
    qom_get("GUEST-STATS", label="property names are case-sensitive"),
    command("qom-list", {"path": "/machine/unattached"}, allow=("qom-skeleton",)),
    command("qom-list", {"path": "/machine/i440fx/pci.0"}, allow=("qom-skeleton",)),
])

UNSET_STATS = Conversation("guest-stats with no report", steps=[
    stats(rule="exact", label="guest-stats, polling off"),
    qom_set(INTERVAL, 1),
    Pause(1.5, label="1.5 s with polling on"),
    stats(rule="exact", label="guest-stats, polling on"),
    qom_set(INTERVAL, 0, label="restore 0"),
])

BALLOON_PAUSED = Conversation("balloon while paused", steps=[
    command("query-balloon"),
    command("balloon", {"value": 0}),
    command("balloon", {"value": -1}),
    command("balloon", {"value": -(2**63)}),
    command("balloon", {"value": "256M"}),
    command("balloon", {"value": 1.5}),
    command("balloon", {"value": 2**63}),
    command("balloon", {"value": 2**64}),
    command("balloon", {"value": None}),
    command("balloon", {"value": 256 * MIB}),
    Pause(0.5, label="nothing moves"),
    command("query-balloon", label="actual does not move"),
    command("balloon", {"value": 1 << 40}, label="above RAM"),
    command("balloon", {"value": 2**63 - 1}, label="int64 max"),
    command("query-balloon", label="still full"),
    command("balloon", {"value": 512 * MIB}, label="restore"),
])

QUERY_STATUS_PRELAUNCH = Conversation("query-status (-S)", steps=[
    command("query-status"),
    command("query-memory-size-summary"),
    command("query-balloon"),
])

PROTOCOL = [GREETING, PRE_NEGOTIATION, NEGOTIATION_ARGUMENTS, OUT_OF_BAND, ONE_CLIENT_AT_A_TIME, UNKNOWN_COMMAND,
            ID_ECHO, ARGUMENTS, MALFORMED, BROKEN_JSON, SPLIT, FRAMING, QOM, QOM_WALK, POLLING_BACKEND_PATH,
            PROPERTIES, UNSET_STATS, BALLOON_PAUSED, QUERY_STATUS_PRELAUNCH]

# --------------------------------------------------------------------------------------------------------------
# A running VM with the device but no guest driver.

NODRIVER_POLLING = Conversation("no driver, polling on", steps=[
    stats(rule="exact", label="no report"),
    qom_set(INTERVAL, 1),
    Poll(STATS_MESSAGE, reported, 2.5, "does a report arrive?", expect=False),
    stats(rule="exact", label="still no report"),
    qom_set(INTERVAL, 0, label="restore 0"),
])

STOP_CONT = Conversation("stop and cont", steps=[
    command("query-status", label="running"),
    command("stop"),
    command("query-status", label="paused"),
    command("stop", label="stop again"),
    command("cont"),
    command("query-status", label="running again"),
    command("cont", label="cont again"),
])

RESET_WHILE_PAUSED = Conversation("system_reset while stopped", steps=[
    command("stop"),
    command("system_reset"),
    command("query-status", label="after reset while stopped (QEMU: prelaunch)"),
    command("cont"),
    command("query-status", label="running"),
])

RESET_NODRIVER = Conversation("system_reset, no driver", steps=[
    qom_set(INTERVAL, 5),
    command("system_reset"),
    qom_get(INTERVAL, label="the polling interval survives a reset"),
    qom_set(INTERVAL, 0, label="restore 0"),
    command("query-status"),
    stats(rule="exact", label="still no report"),
])

NODRIVER = [NODRIVER_POLLING, STOP_CONT, RESET_WHILE_PAUSED, RESET_NODRIVER]

# --------------------------------------------------------------------------------------------------------------
# No balloon device at all (-S).

NO_DEVICE = Conversation("no balloon device (-m 1024)", steps=[
    command("query-memory-size-summary"),
    command("query-balloon"),
    command("balloon", {"value": 256 * MIB}),
    command("balloon", {"value": 0}, label="no device is checked before the value"),
    command("balloon", {"value": "x"}, label="but after the argument types"),
    command("qom-list", {"path": "/machine/peripheral"}),
    qom_get("guest-stats"),
])

#: ``-device virtio-balloon-pci`` without an id (-S).
ANONYMOUS_DEVICE = Conversation("device without id", steps=[
    command("qom-list", {"path": "/machine/peripheral"}),
    command("qom-list", {"path": "/machine/peripheral-anon"}),
    qom_get("type", "/machine/peripheral-anon/device[0]"),
    qom_get(INTERVAL, "/machine/peripheral-anon/device[0]"),
    qom_get("type", "/machine/peripheral-anon/device[1]", label="the doc's device[1] does not exist here"),
    stats(path="/machine/peripheral-anon/device[0]", rule="exact"),
    command("query-balloon"),
])

#: Run states from -S: prelaunch -> (stop: stays prelaunch, no event) -> cont -> stop -> reset -> quit.
RUN_STATES = Conversation("run states from -S, then quit", steps=[
    command("query-status", label="prelaunch"),
    command("stop", label="stop in prelaunch"),
    command("query-status", label="after stop in prelaunch"),
    command("system_reset", label="reset in prelaunch"),
    command("query-status", label="after reset in prelaunch"),
    command("cont"),
    command("query-status", label="running"),
    command("stop"),
    command("system_reset", label="reset while stopped"),
    command("query-status", label="after reset while stopped (QEMU: prelaunch)"),
    Quit(),
])

#: Unplugging the device by hand (QEMU does it; the emulator refuses).  Ends the VM's usefulness: own pair.
UNREALIZE = Conversation("qom-set realized false", steps=[
    qom_set("realized", False, allow=("unplug-not-modelled",), must_differ=True),
    qom_get("realized", allow=("unplug-not-modelled",), must_differ=True),
])

QUIT = Conversation("quit", steps=[command("query-status"), Quit()])

# --------------------------------------------------------------------------------------------------------------
# A Linux 6.1 guest with virtio_balloon (running).

GUEST_POLLING = Conversation("linux guest: boot report, polling, freeze, pause", steps=[
    Poll(STATS_MESSAGE, reported, 60, "boot report present", expect=True, save="boot"),
    qom_get(INTERVAL, label="polling never enabled"),
    stats(label="boot report"),
    poll_moved("boot", 2.5, False, "no refresh while polling is off"),
    qom_set(INTERVAL, 1, label="interval 1"),
    poll_moved("boot", 3, True, "refreshed", save="p1"),
    poll_moved("p1", 3, True, "refreshed again", save="p2"),
    qom_set(INTERVAL, 0, label="interval 0"),
    Pause(1.0, label="a report in flight lands"),
    stats(label="frozen values", save="frozen"),
    poll_moved("frozen", 2.5, False, "frozen after 0"),
    qom_set(INTERVAL, 30, label="interval 30"),
    poll_moved("frozen", 3, True, "0 -> 30 polls at once", save="p30"),
    poll_moved("p30", 2, False, "then not again soon"),
    qom_set(INTERVAL, 30, label="interval 30 again: a no-op"),
    poll_moved("p30", 1.5, False, "the same value does not poll"),
    qom_set(INTERVAL, 20, label="interval 20: on -> on"),
    poll_moved("p30", 1.5, False, "a new value restarts the countdown, no poll at once"),
    qom_set(INTERVAL, 1, label="interval 1 again"),
    poll_moved("p30", 3, True, "polling at 1 s", save="before-stop"),
    command("stop"),
    Pause(0.5, label="a report in flight lands"),
    stats(label="paused values", save="paused"),
    poll_moved("paused", 2.5, False, "no refresh while paused"),
    command("cont"),
    poll_moved("paused", 3, True, "polling resumes after cont"),
    qom_set(INTERVAL, 0, label="restore 0"),
])

GUEST_BALLOON = Conversation("linux guest: balloon to 256 MiB and back", steps=[
    command("query-balloon", label="full"),
    command("balloon", {"value": 256 * MIB}, claim_events=False),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="BALLOON_CHANGE down to 256 MiB",
           until=_last_actual_is(256 * MIB)),
    command("query-balloon", label="256 MiB"),
    qom_set(INTERVAL, 1, label="interval 1"),
    Poll(STATS_MESSAGE, lambda r, s: r["return"]["stats"]["stat-total-memory"] < 300 * MIB, 5,
         "guest total shrinks by about 256 MiB", expect=True),
    qom_set(INTERVAL, 0, label="restore 0"),
    command("balloon", {"value": 256 * MIB + 1}, label="not a whole page", claim_events=False),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="BALLOON_CHANGE to the page above",
           until=_last_actual_is(256 * MIB + 4096)),
    command("query-balloon", label="256 MiB + 4 KiB"),
    command("balloon", {"value": 1 << 40}, label="above RAM: clamped", claim_events=False),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="BALLOON_CHANGE back to full",
           until=_last_actual_is(512 * MIB)),
    command("query-balloon", label="full again"),
])

FILL = "/tmp/balloonlab-differential-fill"


def _dropped(name: str, size: int):
    """Poll condition: free-memory fell and disk-caches grew by at least ``size`` since the reply ``name``."""
    def ok(reply: dict, saved: dict) -> bool:
        now, before = reply["return"]["stats"], saved[name]["return"]["stats"]
        return (now["stat-free-memory"] <= before["stat-free-memory"] - size
                and now["stat-disk-caches"] >= before["stat-disk-caches"] + size)
    return ok


def _recovered(name: str, slack: int):
    def ok(reply: dict, saved: dict) -> bool:
        before = saved[name]["return"]["stats"]["stat-free-memory"]
        return reply["return"]["stats"]["stat-free-memory"] >= before - slack
    return ok


GUEST_EVENTS_NEED_NEGOTIATION = Conversation("linux guest: no events before negotiation", steps=[
    command("balloon", {"value": 256 * MIB}, claim_events=False),
    Handover(),
    Pause(2, label="the guest inflates; an unnegotiated client hears nothing"),
    command("qmp_capabilities"),
    command("query-balloon", label="the balloon did move"),
    command("balloon", {"value": 512 * MIB}, claim_events=False, label="back to full"),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="events flow after negotiation",
           until=_last_actual_is(512 * MIB)),
])

GUEST_TMPFS = Conversation("linux guest: 96 MiB into tmpfs and back", steps=[
    stats(label="current", save="start"),
    qom_set(INTERVAL, 1, label="interval 1"),
    poll_moved("start", 3, True, "a fresh report", save="before"),
    GuestRun(f"dd if=/dev/zero of={FILL} bs=1M count=96 2>/dev/null", {"action": "tmpfs", "size": "96M"},
             "write 96 MiB into tmpfs"),
    Poll(STATS_MESSAGE, _dropped("before", 80 * MIB), 5, "free drops and disk-caches grow by ~96 MiB",
         expect=True),
    GuestRun(f"rm -f {FILL}", {"action": "tmpfs", "size": "0"}, "remove the file"),
    Poll(STATS_MESSAGE, _recovered("before", 16 * MIB), 5, "free memory comes back", expect=True),
    qom_set(INTERVAL, 0, label="restore 0"),
])

GUEST_RESET = Conversation("linux guest: system_reset with the balloon inflated (7.2 keeps the stats, 10.0 clears "
                           "them)", steps=[
    command("balloon", {"value": 256 * MIB}, claim_events=False),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="inflated to 256 MiB",
           until=_last_actual_is(256 * MIB)),
    stats(label="before reset", save="before"),
    command("system_reset"),
    Pause(0.5, label="the firmware resets the machine again", allow=("firmware-resets",)),
    command("query-balloon", label="right after the reset"),
    stats(label="right after the reset"),
    qom_set(INTERVAL, 1, label="interval 1 while the guest reboots (the device holds no buffer: re-arm)"),
    poll_moved("before", 30, True, "the rebooted guest's driver reports", save="rebooted"),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="the rebooted driver inflates to the target again",
           until=_last_actual_is(256 * MIB), allow=("firmware-resets",)),
    command("query-balloon", label="256 MiB after the reboot"),
    poll_moved("rebooted", 3, True, "and answers the polls"),
    qom_set(INTERVAL, 0, label="restore 0"),
    command("balloon", {"value": 512 * MIB}, claim_events=False, label="back to full"),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="deflated", until=_last_actual_is(512 * MIB)),
])

#: The polling period and its countdown, measured (docs/qemu-behaviour.md, B): off -> on polls at once and then
#: every interval; a new value while on restarts the countdown from the qom-set, also one second into a 2 s
#: countdown.
GUEST_TIMING = Conversation("linux guest: report times at intervals 1 and 2, and a change in mid-countdown", steps=[
    Pause(1.1, label="a new second since the last report (the boot report, or the last poll)"),
    stats(label="before polling", save="off"),
    qom_set(INTERVAL, 1, label="interval 1", mark="on"),
    ReportTimes(4, 8, "interval 1: a report at once, then one a second", expect=[0, 1, 1, 1], since="on",
                baseline="off"),
    qom_set(INTERVAL, 2, label="interval 2 right after a report", mark="two"),
    ReportTimes(3, 10, "interval 2: the countdown restarts at the qom-set, then one every 2 s", expect=[2, 2, 2],
                since="two"),
    Pause(1.0, label="one second into the 2 s countdown"),
    qom_set(INTERVAL, 3, label="interval 3 in mid-countdown", mark="three"),
    ReportTimes(2, 10, "interval 3: 3 s after the qom-set, not when the 2 s countdown ends", expect=[3, 3],
                since="three"),
    qom_set(INTERVAL, 0, label="restore 0"),
])

#: QEMU's monitor lets one BALLOON_CHANGE a second out; one made meanwhile is held back and sent when the second
#: ends, stamped with the time QEMU made it.  Two 256-page chunks of the Linux driver (2 MiB) make two changes a few
#: ms apart: the first goes out at once, the second a second later with a timestamp a few ms after the first's.
GUEST_COALESCED = Conversation("linux guest: a held-back BALLOON_CHANGE keeps its timestamp", steps=[
    Pause(1.5, label="no BALLOON_CHANGE in the last second: the rate limit is idle"),
    command("balloon", {"value": 510 * MIB}, claim_events=False, mark="inflate", label="inflate by two chunks"),
    Events(["BALLOON_CHANGE"], 10, rule="event-times", since="inflate", until=_last_actual_is(510 * MIB),
           label="the first change at once, the second held back but stamped when made"),
    Pause(1.5, label="the rate limit goes idle again"),
    command("balloon", {"value": 512 * MIB}, claim_events=False, mark="deflate", label="deflate by two chunks"),
    Events(["BALLOON_CHANGE"], 10, rule="event-times", since="deflate", until=_last_actual_is(512 * MIB),
           label="the same on the way back"),
])

GUEST = [GUEST_POLLING, GUEST_BALLOON, GUEST_TIMING, GUEST_COALESCED, GUEST_EVENTS_NEED_NEGOTIATION, GUEST_TMPFS,
         GUEST_RESET]


GUEST_PAUSED_THEN_BOOT = Conversation("linux guest started with -S, then cont", steps=[
    stats(rule="exact", label="no report before the guest ran"),
    command("query-status", label="prelaunch"),
    command("balloon", {"value": 256 * MIB}, label="balloon while paused"),
    Pause(0.5, label="nothing moves while paused"),
    command("query-balloon", label="actual does not move while paused"),
    qom_set(INTERVAL, 1, label="interval 1 before the guest ever ran"),
    command("cont", claim_events=False),
    Poll(STATS_MESSAGE, reported, 60, "the driver reports once it loads", expect=True, save="first"),
    Events(["BALLOON_CHANGE"], 30, rule="balloon-events", label="the driver inflates to the target",
           until=_last_actual_is(256 * MIB)),
    command("query-balloon", label="now 256 MiB"),
    poll_moved("first", 3, True, "and polling at 1 s runs (the timer re-armed while no buffer was held)"),
    qom_set(INTERVAL, 0, label="restore 0"),
])
