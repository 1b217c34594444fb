"""Comparison rules: is the emulator's answer to a step the same as real QEMU's?

Rules (a step names one):
- ``exact``: every reply equal, member order included (QEMU's wire order is part of what the emulator
  reproduces), and the step's events equal by name and data (timestamps by shape only).
- ``greeting``: like exact, for the greeting.
- ``raw``: the bytes on the wire equal (framing: separators, CRLF, string escapes).
- ``stats``: guest-produced values, compared by shape: same keys in the same wire order, the same stats set or
  unset, free and available at most total, total at most the VM's RAM, last-update 0 on both or, on both, a
  host wall-clock time of the last hour.
- ``poll``: whether the condition held, the same on both sides (and as the step expects of real QEMU); the last
  reply compared by the stats rule when it is a guest-stats answer, exactly otherwise.
- ``events``: event names in order, data equal, timestamps by shape.
- ``balloon-events``: BALLOON_CHANGE events present on both with the same last ``actual`` (how many arrive
  depends on how fast the guest gives pages back, rate-limited by QEMU); the other events as ``events``.
- ``timing``: when the guest's reports arrived (``ReportTimes``): as many on both sides, and each gap between
  reports within ``TIMING_TOLERANCE`` of real QEMU's and of what docs/qemu-behaviour.md (B) says (``expect``):
  tight enough that a doubled period, or a countdown that does not restart on a new interval, fails.
- ``event-times``: the events as ``events``, and each one's timestamp, relative to the command that caused it
  (``Events(since=...)``), within ``TIMING_TOLERANCE`` of real QEMU's: a held-back (coalesced) BALLOON_CHANGE
  keeps the time QEMU made it, not the time the rate limit let it out.
- ``none``: not compared (the step only drives the guest).

A mismatch on a step that lists documented differences (``allow``) is re-checked after each difference's
normaliser ran on both sides: if that makes them agree, the step passes and the difference is reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from balloonlab.stats import UNSET

from .conversation import Observation
from .differences import DIFFERENCES


@dataclass
class Verdict:
    """The outcome of comparing one conversation."""

    mismatches: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  #: "step: difference-id" for each documented difference used

    @property
    def ok(self) -> bool:
        return not self.mismatches


#: Seconds two measured times may differ by: a TCG guest's answer and this client's 20 ms polling add jitter of a
#: few tens of ms on a busy machine; the mistakes these rules catch are off by a whole period (1 s and more).
TIMING_TOLERANCE = 0.3


def ordered(value: Any) -> str:
    """A canonical text of a JSON value that keeps member order (so order differences show)."""
    return json.dumps(value, ensure_ascii=False)


def _timestamp_ok(event: dict) -> bool:
    ts = event.get("timestamp")
    return (isinstance(ts, dict) and list(ts) == ["seconds", "microseconds"]
            and all(isinstance(v, int) and v >= 0 for v in ts.values()) and ts["microseconds"] < 1_000_000)


def _event_problems(real: list[dict], emu: list[dict], who: str = "") -> list[str]:
    out = []
    for side, events in (("qemu", real), ("emulator", emu)):
        for e in events:
            if not _timestamp_ok(e):
                out.append(f"{side}: event timestamp has the wrong shape: {ordered(e)}")
            if list(e)[:2] != ["timestamp", "event"]:
                out.append(f"{side}: event members not in QEMU's order (timestamp, event, data): {ordered(e)}")
    strip = lambda es: [ordered({k: v for k, v in e.items() if k != "timestamp"}) for e in es]  # noqa: E731
    if strip(real) != strip(emu):
        out.append(f"events differ{who}:\n    qemu:     {strip(real)}\n    emulator: {strip(emu)}")
    return out


def _replies_differ(real: list[dict], emu: list[dict]) -> str:
    """The differing replies (all of them when the counts differ), long ones cut."""
    cut = lambda r: (t if len(t := ordered(r)) <= 600 else t[:600] + " ...")  # noqa: E731
    if len(real) != len(emu) or len(real) <= 1:
        return (f"replies differ ({len(real)} from qemu, {len(emu)} from the emulator):\n    qemu:     "
                + "\n              ".join(cut(r) for r in real)
                + "\n    emulator: " + "\n              ".join(cut(r) for r in emu))
    lines = [f"reply {i + 1} of {len(real)} differs:\n    qemu:     {cut(r)}\n    emulator: {cut(e)}"
             for i, (r, e) in enumerate(zip(real, emu)) if ordered(r) != ordered(e)]
    return "\n  ".join(lines)


def _exact(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = []
    if [ordered(r) for r in real.replies] != [ordered(r) for r in emu.replies]:
        out.append(_replies_differ(real.replies, emu.replies))
    if real.value != emu.value:
        out.append(f"observed {real.value!r} on qemu, {emu.value!r} on the emulator")
    return out + _event_problems(real.events, emu.events)


def _raw(real: Observation, emu: Observation, ram: int) -> list[str]:
    if real.lines != emu.lines:
        return [f"bytes on the wire differ:\n    qemu:     {real.lines!r}\n    emulator: {emu.lines!r}"]
    return []


def _last_update_shape(value: Any) -> str:
    """0, or host wall-clock seconds of the last hour (both sides run now, on this host's clock)."""
    if value == 0:
        return "0"
    if isinstance(value, int) and abs(value - time.time()) < 3600:
        return "> 0, host wall-clock seconds"
    return f"not host wall-clock seconds: {value!r}"


def stats_shape(reply: dict, ram: int) -> dict:
    """The shape of a guest-stats reply that a second QEMU running the same guest must share."""
    if "return" not in reply or not isinstance(reply["return"], dict) or "stats" not in reply["return"]:
        return {"not guest-stats": reply}
    ret = reply["return"]
    stats = ret["stats"]
    value = lambda k: stats.get(f"stat-{k}", UNSET)  # noqa: E731
    total, free, avail = value("total-memory"), value("free-memory"), value("available-memory")
    shape = {
        "members": list(ret),
        "keys": list(stats),
        "set": [k for k, v in stats.items() if v != UNSET],
        "types": sorted({type(v).__name__ for v in stats.values()} | {type(ret.get("last-update")).__name__}),
        "last-update": _last_update_shape(ret.get("last-update")),
    }
    if total != UNSET:
        shape["total <= RAM"] = total <= ram
        if free != UNSET:
            shape["free <= total"] = free <= total
        if avail != UNSET:
            shape["available <= total"] = avail <= total
    return shape


def _stats(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = []
    if len(real.replies) != len(emu.replies):
        return [f"{len(real.replies)} replies from qemu, {len(emu.replies)} from the emulator"]
    for r, e in zip(real.replies, emu.replies):
        rs, es = stats_shape(r, ram), stats_shape(e, ram)
        if rs != es:
            out.append(f"guest-stats shape differs:\n    qemu:     {ordered(rs)}\n    emulator: {ordered(es)}"
                       f"\n    (qemu said {ordered(r)}\n     emulator said {ordered(e)})")
    return out + _event_problems(real.events, emu.events)


def _poll(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = []
    if real.expect is not None and real.value != real.expect:
        out.append(f"real QEMU did not do what the conversation expects (condition held: {real.value}, "
                   f"expected {real.expect}); last reply {ordered(real.replies[-1])}")
    if real.value != emu.value:
        out.append(f"condition held on qemu: {real.value}, on the emulator: {emu.value} "
                   f"(last replies: qemu {ordered(real.replies[-1])}, emulator {ordered(emu.replies[-1])})")
    is_stats = "stats" in stats_shape(real.replies[-1], ram).get("members", [])
    out += (_stats if is_stats else _exact)(Observation(real.label, "", real.replies, real.events),
                                            Observation(emu.label, "", emu.replies, emu.events), ram)
    return out


def _events(real: Observation, emu: Observation, ram: int) -> list[str]:
    return _event_problems(real.events, emu.events)


def _balloon_events(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = []
    last = {}
    for side, obs in (("qemu", real), ("emulator", emu)):
        changes = [e for e in obs.events if e["event"] == "BALLOON_CHANGE"]
        if not changes:
            out.append(f"{side}: no BALLOON_CHANGE event")
            continue
        last[side] = changes[-1].get("data")
        for e in changes:
            if list(e) != ["timestamp", "event", "data"] or list(e["data"]) != ["actual"]:
                out.append(f"{side}: BALLOON_CHANGE has the wrong shape: {ordered(e)}")
    if len(last) == 2 and last["qemu"] != last["emulator"]:
        out.append(f"last BALLOON_CHANGE differs: qemu {last['qemu']}, emulator {last['emulator']}")
    others = lambda es: [e for e in es if e["event"] != "BALLOON_CHANGE"]  # noqa: E731
    return out + _event_problems(others(real.events), others(emu.events), " (other than BALLOON_CHANGE)")


def _timing(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = []
    if len(real.value) != len(emu.value):
        return [f"{len(real.value)} reports on qemu, {len(emu.value)} on the emulator (seconds apart: qemu "
                f"{real.value}, emulator {emu.value})"]
    expect = real.expect or [None] * len(real.value)
    if len(expect) != len(real.value):
        out.append(f"real QEMU sent {len(real.value)} reports ({real.value}), docs/qemu-behaviour.md (B) says "
                   f"{len(expect)}")
    for i, (r, e, want) in enumerate(zip(real.value, emu.value, expect)):
        what = "start to the first report" if i == 0 else f"report {i} to report {i + 1}"
        if want is None:
            continue
        if abs(r - want) > TIMING_TOLERANCE:
            out.append(f"real QEMU: {what} took {r} s, docs/qemu-behaviour.md (B) says {want} s "
                       "(the conversation is wrong?)")
        if abs(e - r) > TIMING_TOLERANCE:
            out.append(f"{what}: {r} s on qemu, {e} s on the emulator (tolerance {TIMING_TOLERANCE} s)")
    return out


def _event_times(real: Observation, emu: Observation, ram: int) -> list[str]:
    out = _event_problems(real.events, emu.events)
    if not out:
        for (name, r), (_, e) in zip(real.value, emu.value):
            if abs(r - e) > TIMING_TOLERANCE:
                out.append(f"{name} stamped {r} s after the command on qemu, {e} s on the emulator "
                           f"(all: qemu {real.value}, emulator {emu.value})")
    return out


RULES: dict[str, Callable[[Observation, Observation, int], list[str]]] = {
    "exact": _exact,
    "greeting": _exact,
    "raw": _raw,
    "stats": _stats,
    "poll": _poll,
    "events": _events,
    "balloon-events": _balloon_events,
    "timing": _timing,
    "event-times": _event_times,
    "none": lambda real, emu, ram: [],
}


def _normalised(real: Observation, emu: Observation, ids) -> tuple[Observation, Observation]:
    for d in ids:
        real, emu = DIFFERENCES[d].apply(real, emu)
    return real, emu


def compare(real: list[Observation], emu: list[Observation], ram: int, version: str | None = None) -> Verdict:
    """Compare two runs of one conversation step by step (``version``: the emulator profile, which decides the
    documented differences that apply)."""
    verdict = Verdict()
    if [o.label for o in real] != [o.label for o in emu]:
        verdict.mismatches.append("the runs have different steps (one side stopped early?)")
        return verdict
    for r, e in zip(real, emu):
        rule = RULES[r.rule]
        problems = rule(r, e, ram)
        allow = [d for d in r.allow if DIFFERENCES[d].applies_to(version)]
        if r.must_differ and not problems:
            verdict.mismatches.append(f"step {r.label!r}: the emulator answered as QEMU does, but docs/differences.md "
                                      f"says it differs here ({', '.join(allow)}): fix the emulator or the list")
            continue
        if problems and allow:
            remaining = rule(*_normalised(r, e, allow), ram)
            if not remaining:
                # name only the differences this step needed: those without which it would not pass
                needed = [d for d in allow if rule(*_normalised(r, e, [x for x in allow if x != d]), ram)]
                verdict.allowed += [f"{r.label}: {d}" for d in needed or allow]
                continue
            # show what the documented differences do not explain
            problems = [f"(beyond documented {', '.join(allow)}) {p}" for p in remaining]
        verdict.mismatches += [f"step {r.label!r}: {p}" for p in problems]
    return verdict
