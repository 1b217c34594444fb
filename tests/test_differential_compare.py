"""The differential suite's comparison rules and allow-list, on hand-written observations (no QEMU needed).

A comparator that let a real difference through would make every differential test vacuous, so each rule is
shown to catch what it is for, and the allow-list is checked against docs/differences.md both ways.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from balloonlab.stats import UNSET, WIRE_ORDER_10
from tests.differential.compare import compare, stats_shape
from tests.differential.conversation import Observation
from tests.differential.differences import DIFFERENCES, UNOBSERVED, UNPLUG_ANSWERS

RAM = 512 << 20
DOC = Path(__file__).resolve().parent.parent / "docs" / "differences.md"


def obs(replies, rule="exact", events=(), value=None, allow=(), expect=None, label="step", lines=()):
    return [Observation(label, rule, list(replies), list(events), list(lines), value, tuple(allow), b"", expect)]


def event(name, data=None, seconds=1795666000, micro=5):
    e = {"timestamp": {"seconds": seconds, "microseconds": micro}, "event": name}
    if data is not None:
        e["data"] = data
    return e


def guest_stats(last_update=None, unset=(), order=WIRE_ORDER_10, **values):
    base = {"free-memory": 462753792, "total-memory": 492847104, "available-memory": 462454784,
            "disk-caches": 2269184, "minor-faults": 668}
    stats = {f"stat-{k}": UNSET if k in unset else values.get(k.replace("-", "_"), base.get(k, 0)) for k in order}
    return {"return": {"stats": stats, "last-update": int(time.time()) if last_update is None else last_update}}


def test_exact_equal_passes():
    reply = {"error": {"class": "GenericError", "desc": "timer value is too big"}}
    assert compare(obs([reply]), obs([dict(reply)]), RAM).ok


@pytest.mark.parametrize("emu", [
    {"error": {"class": "GenericError", "desc": "timer value is too large"}},
    {"error": {"class": "DeviceNotFound", "desc": "timer value is too big"}},
    {"error": {"desc": "timer value is too big", "class": "GenericError"}},  # member order
    {"return": {}},
])
def test_exact_catches_any_difference(emu):
    real = {"error": {"class": "GenericError", "desc": "timer value is too big"}}
    verdict = compare(obs([real]), obs([emu]), RAM)
    assert not verdict.ok and "differ" in verdict.mismatches[0]


def test_exact_compares_events_but_not_timestamps():
    real = obs([{"return": {}}], events=[event("STOP", seconds=1)])
    assert compare(real, obs([{"return": {}}], events=[event("STOP", seconds=2, micro=9)]), RAM).ok
    assert not compare(real, obs([{"return": {}}], events=[]), RAM).ok
    assert not compare(real, obs([{"return": {}}], events=[event("RESUME")]), RAM).ok
    bad_ts = {"timestamp": {"seconds": 1.5, "microseconds": 0}, "event": "STOP"}
    assert not compare(real, obs([{"return": {}}], events=[bad_ts]), RAM).ok


def test_raw_compares_bytes():
    a = obs([], rule="raw", lines=[b'{"id": "\\u00E9"}\r\n'])
    assert compare(a, obs([], rule="raw", lines=[b'{"id": "\\u00E9"}\r\n']), RAM).ok
    assert not compare(a, obs([], rule="raw", lines=[b'{"id": "\\u00e9"}\r\n']), RAM).ok
    assert not compare(a, obs([], rule="raw", lines=[b'{"id": "\\u00E9"}\n']), RAM).ok


def test_stats_same_shape_other_values_passes():
    assert compare(obs([guest_stats()], "stats"), obs([guest_stats(int(time.time()) - 5, free_memory=1 << 20)],
                                                     "stats"), RAM).ok


@pytest.mark.parametrize("emu", [
    guest_stats(unset=("disk-caches",)),                       # set vs unset
    guest_stats(last_update=0),                                # 0 vs > 0
    guest_stats(last_update=42),                               # VM-clock seconds, not the host's wall clock
    guest_stats(order=tuple(reversed(WIRE_ORDER_10))),         # wire order
    guest_stats(free_memory=600 << 20),                        # free above total
    guest_stats(total_memory=RAM + 1, free_memory=1, available_memory=1),  # total above RAM
    {"return": {"last-update": int(time.time()), "stats": guest_stats()["return"]["stats"]}},  # member order
    {"error": {"class": "GenericError", "desc": "x"}},
])
def test_stats_catches_shape_differences(emu):
    assert not compare(obs([guest_stats()], "stats"), obs([emu], "stats"), RAM).ok


def test_stats_shape_of_unset_report():
    shape = stats_shape(guest_stats(last_update=0, unset=WIRE_ORDER_10), RAM)
    assert shape["set"] == [] and shape["last-update"] == "0" and "total <= RAM" not in shape


def test_poll_compares_outcome_and_expectation():
    real = obs([guest_stats()], "poll", value=True, expect=True)
    assert compare(real, obs([guest_stats(int(time.time()) + 1)], "poll", value=True), RAM).ok
    assert not compare(real, obs([guest_stats()], "poll", value=False), RAM).ok
    # real QEMU not doing what the conversation says it does is a failure too (broken set-up, wrong spec)
    unexpected = obs([guest_stats()], "poll", value=False, expect=True)
    verdict = compare(unexpected, obs([guest_stats()], "poll", value=False), RAM)
    assert not verdict.ok and "real QEMU did not do" in verdict.mismatches[0]


def test_balloon_events_compare_the_last_actual():
    real = obs([], "balloon-events", events=[event("BALLOON_CHANGE", {"actual": 535822336}),
                                             event("BALLOON_CHANGE", {"actual": 268435456})])
    one = obs([], "balloon-events", events=[event("BALLOON_CHANGE", {"actual": 268435456})])
    assert compare(real, one, RAM).ok
    wrong = obs([], "balloon-events", events=[event("BALLOON_CHANGE", {"actual": 268439552})])
    assert not compare(real, wrong, RAM).ok
    assert not compare(real, obs([], "balloon-events"), RAM).ok
    extra = obs([], "balloon-events", events=[event("BALLOON_CHANGE", {"actual": 268435456}), event("STOP")])
    assert not compare(real, extra, RAM).ok


def _commands(*names):
    return {"return": [{"name": n} for n in names]}


def test_query_commands_subset_is_reported_not_skipped():
    allow = ("query-commands-subset",)
    real = obs([_commands("device_add", "query-balloon", "balloon", "qom-get")], allow=allow)
    emu = obs([_commands("qom-get", "balloon", "query-balloon", "x-balloonlab-status")], allow=allow)
    verdict = compare(real, emu, RAM)
    assert verdict.ok and verdict.allowed == ["step: query-commands-subset"]
    # without the allowance the same answers are a mismatch: nothing is skipped silently
    assert not compare(obs(real[0].replies), obs(emu[0].replies), RAM).ok


def test_query_commands_subset_does_not_excuse_a_missing_command():
    allow = ("query-commands-subset",)
    real = obs([_commands("query-balloon", "balloon", "qom-get")], allow=allow)
    emu = obs([_commands("query-balloon", "qom-get")], allow=allow)
    assert not compare(real, emu, RAM).ok


def test_concurrent_clients_difference_applies_to_the_observed_value():
    allow = ("concurrent-clients",)
    verdict = compare(obs([], value={"greeted": False}, allow=allow), obs([], value={"greeted": True}, allow=allow),
                      RAM)
    assert verdict.ok and verdict.allowed == ["step: concurrent-clients"]
    assert not compare(obs([], value={"greeted": False}), obs([], value={"greeted": True}), RAM).ok


def test_only_needed_differences_are_reported():
    allow = ("concurrent-clients", "query-commands-subset")
    real = obs([_commands("device_add", "balloon")], allow=allow)
    emu = obs([_commands("balloon")], allow=allow)
    assert compare(real, emu, RAM).allowed == ["step: query-commands-subset"]


def test_point_release_difference_keeps_major_and_minor():
    greeting = lambda micro, major=7: {"QMP": {"version": {"qemu": {"micro": micro, "minor": 2, "major": major},  # noqa: E731
                                                           "package": f"Debian 7.2.{micro}"}, "capabilities": ["oob"]}}
    allow = ("qemu-point-release",)
    verdict = compare(obs([greeting(22)], "greeting", allow=allow), obs([greeting(23)], "greeting", allow=allow), RAM)
    assert verdict.ok and verdict.allowed
    assert not compare(obs([greeting(22)], "greeting", allow=allow),
                       obs([greeting(22, major=10)], "greeting", allow=allow), RAM).ok


def test_every_allow_list_entry_is_used_by_a_conversation_or_a_test():
    """No dead entries: each documented difference is named by a conversation step or a differential test."""
    from tests.differential import conversation, conversations

    sources = [Path(m.__file__).read_text() for m in (conversation, conversations)]
    sources += [p.read_text() for p in Path(__file__).parent.glob("test_differential_*.py") if p != Path(__file__)]
    unused = [d for d in DIFFERENCES if not any(f'"{d}"' in text for text in sources)]
    assert not unused, f"allow-list entries no conversation or test uses: {unused}"


def documented_entries() -> dict[str, str]:
    """docs/differences.md's entries: heading id -> the entry's text (up to the next heading)."""
    parts = re.split(r"^(#{1,2} .*)$", DOC.read_text(), flags=re.M)
    entries = {}
    for heading, body in zip(parts[1::2], parts[2::2]):
        if match := re.fullmatch(r"## `([a-z0-9.-]+)`", heading):
            entries[match[1]] = body
    return entries


def test_every_documented_difference_is_in_the_allow_list_and_back():
    entries = documented_entries()
    assert not set(DIFFERENCES) & set(UNOBSERVED), "an id is both observed and not"
    assert set(entries) == set(DIFFERENCES) | set(UNOBSERVED), (
        f"docs/differences.md entries {sorted(entries)} != allow-list {sorted(DIFFERENCES)} + unobserved "
        f"{sorted(UNOBSERVED)}")


@pytest.mark.parametrize("entry", sorted(set(DIFFERENCES) | set(UNOBSERVED)))
def test_each_documented_difference_says_what_and_why(entry):
    body = documented_entries()[entry]
    assert "**What" in body and "**Why:**" in body, f"docs/differences.md `{entry}` lacks a What or a Why"
    difference = DIFFERENCES.get(entry)
    if difference is not None and difference.versions is not None:
        assert all(v in body for v in difference.versions), (
            f"`{entry}` applies to {difference.versions} only; its entry must say so")


def test_documented_refusals_are_the_emulators_words():
    """The entries quote the emulator's refusals; the comparator requires exactly these (UNPLUG_ANSWERS)."""
    entries = documented_entries()
    refusal = UNPLUG_ANSWERS[0][1]["error"]["desc"]
    assert " ".join(refusal.split()) in " ".join(entries["unplug-not-modelled"].replace("`", "").split())
    assert "'free-page-hint' requires 'iothread' to be set" in " ".join(entries["no-iothread"].split())


def test_other_docs_point_at_the_one_list():
    docs = DOC.parent
    for name in ("emulator.md", "testing.md"):
        assert "differences.md" in (docs / name).read_text(), f"docs/{name} must point at docs/differences.md"


def test_firmware_resets_collapse_only_repeated_guest_resets():
    allow = ("firmware-resets",)
    fw = event("RESET", {"guest": True, "reason": "guest-reset"})
    host = event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    verdict = compare(obs([], "events", events=[fw, fw], allow=allow), obs([], "events", events=[fw], allow=allow),
                      RAM)
    assert verdict.ok and verdict.allowed == ["step: firmware-resets"]
    assert not compare(obs([], "events", events=[fw], allow=allow), obs([], "events", events=[], allow=allow),
                       RAM).ok
    assert not compare(obs([], "events", events=[fw, host], allow=allow),
                       obs([], "events", events=[fw], allow=allow), RAM).ok


def test_version_limited_difference_applies_to_its_profiles_only():
    allow = ("qom-listing-newer-qemu",)
    listing = lambda *names: {"return": [{"name": n, "type": "bool"} for n in names]}  # noqa: E731
    real = obs([listing("in_order", "deflate-on-oom", "page-poison")], allow=allow)
    emu = obs([listing("page-poison", "deflate-on-oom")], allow=allow)
    assert compare(real, emu, RAM, "10.0").allowed == ["step: qom-listing-newer-qemu"]
    assert not compare(real, emu, RAM, "7.2").ok
    # a balloon property missing is not excused on 10.0 either
    assert not compare(real, obs([listing("page-poison")], allow=allow), RAM, "10.0").ok


# --------------------------------------------------------------------------------------------------------------
# documented differences that must show, measured times


def unplug(replies, emu_replies):
    allow = ("unplug-not-modelled",)
    real, emu = obs(replies, allow=allow), obs(emu_replies, allow=allow)
    real[0].must_differ = emu[0].must_differ = True
    return compare(real, emu, RAM)


REFUSAL = {"error": {"class": "GenericError",
                     "desc": "balloonlab emulator: unrealizing (unplugging) a device is not modelled"}}


def test_unplug_passes_only_as_qemu_unplugging_and_the_emulator_refusing_in_its_words():
    assert unplug([{"return": {}}], [REFUSAL]).ok
    assert unplug([{"return": False}], [{"return": True}]).ok


@pytest.mark.parametrize("real, emu, why", [
    ({"return": {}}, {"return": {}}, "accepted silently: the documented refusal is gone"),
    ({"return": False}, {"return": False}, "unplugged: the documented refusal is gone"),
    ({"return": {}}, {"error": {"class": "GenericError", "desc": "not modelled"}}, "another refusal"),
    ({"return": {}}, {"return": True}, "a qom-get answer to a qom-set"),
    ({"return": True}, {"return": True}, "QEMU did not unplug"),
])
def test_unplug_any_other_answer_fails(real, emu, why):
    assert not unplug([real], [emu]).ok, why


def timing(real, emu, expect):
    r, e = obs([], rule="timing", value=real, expect=expect), obs([], rule="timing", value=emu)
    return compare(r, e, RAM)


def test_timing_accepts_jitter_within_the_tolerance():
    assert timing([0.05, 1.02, 0.98, 1.04], [0.02, 1.0, 1.0, 1.0], [0, 1, 1, 1]).ok


@pytest.mark.parametrize("real, emu, expect, why", [
    ([0.05, 1.02, 0.98, 1.04], [0.02, 2.0, 2.0, 2.0], [0, 1, 1, 1], "a doubled period"),
    ([2.03, 2.0, 2.01], [1.0, 2.0, 2.0], [2, 2, 2],
     "a countdown that does not restart at the qom-set (the first report when the old countdown ends)"),
    ([0.05, 1.02, 0.98, 1.04], [0.02, 1.0, 1.0], [0, 1, 1, 1], "a report missing"),
])
def test_timing_catches_a_wrong_period_or_countdown(real, emu, expect, why):
    assert not timing(real, emu, expect).ok, why


def test_timing_fails_when_real_qemu_breaks_the_spec():
    """A conversation whose expectation real QEMU does not meet is wrong, even when the emulator agrees."""
    assert not timing([0.03, 2.0, 2.0], [0.02, 2.0, 2.0], [0, 1, 1]).ok


def test_event_times_catch_a_held_back_event_restamped_when_sent():
    change = lambda actual, micro: event("BALLOON_CHANGE", {"actual": actual}, micro=micro)  # noqa: E731
    events = [change(511 << 20, 4000), change(510 << 20, 9000)]
    real = obs([], rule="event-times", events=events, value=[("BALLOON_CHANGE", 0.004), ("BALLOON_CHANGE", 0.012)])
    good = obs([], rule="event-times", events=events, value=[("BALLOON_CHANGE", 0.002), ("BALLOON_CHANGE", 0.004)])
    late = obs([], rule="event-times", events=events, value=[("BALLOON_CHANGE", 0.002), ("BALLOON_CHANGE", 1.002)])
    assert compare(real, good, RAM).ok
    verdict = compare(real, late, RAM)
    assert not verdict.ok and "stamped 0.012 s after the command on qemu, 1.002 s" in verdict.mismatches[0]
