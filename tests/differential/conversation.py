"""Conversations: what the differential tests say to a QEMU, step by step, and what each step observed.

A conversation is a list of steps run in order over one fresh QMP connection (the greeting is the first
observation).  Each step produces an :class:`Observation`; the comparator (``compare.py``) later pairs the real
QEMU's observations with the emulator's, step by step, using the rule the step names.

Steps:
- :class:`Send`: one message (a JSON value, or raw bytes for protocol tests).  ``replies=1`` reads one reply;
  ``replies=0`` reads none (half a message); ``replies=SYNC`` sends a sentinel command after it and keeps every
  reply before the sentinel's, for input that makes QEMU answer an unknown number of times (broken JSON).
- :class:`Poll`: sends a command until a condition on its reply holds or a deadline passes; observes whether it
  held (for the guest: "did last-update move within N s?").  ``expect`` states what real QEMU does, so a
  conversation on a broken set-up (guest never booted) fails loudly instead of "agreeing" with the emulator.
- :class:`Events`: reads until the named events arrived (or a deadline), observes the events.
- :class:`GuestRun`: makes the guest do something (live: a shell command; emulated: ``x-balloonlab-guest``).
- :class:`QomWalk`: every property of a QOM path read back (and written with its own value).
- :class:`SecondClient` / :class:`Handover`: a second client while the first is connected / after it left.
- :class:`Quit`: ``quit``, then observes the reply, the SHUTDOWN event and whether the connection closed.
- :class:`ReportTimes`: when the guest's reports arrive (seconds from the step's start to the first, then
  between reports), for the polling period and its countdown (rule ``timing``).
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from .wire import RawQMP

#: ``Send(replies=SYNC)``: collect every reply up to a sentinel command's.
SYNC = "sync"
SYNC_ID = "differential-sync"
SYNC_COMMAND = {"execute": "query-status", "id": SYNC_ID}


@dataclass
class Observation:
    """What one step saw on one side."""

    label: str
    rule: str  #: name of the comparison rule in compare.RULES
    replies: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  #: events that arrived during this step
    lines: list[bytes] = field(default_factory=list)  #: raw lines received during this step
    value: Any = None  #: what a Poll / Quit / GuestRun observed
    allow: tuple[str, ...] = ()  #: ids of documented differences (differences.py) this step may show
    sent: bytes = b""
    expect: Any = None  #: what real QEMU is known to do here (Poll); None = no expectation
    #: the step must show one of its ``allow`` differences: an emulator that answers as QEMU here no longer does
    #: what docs/differences.md says, and the list must change with it
    must_differ: bool = False


class Side(Protocol):
    """What a conversation runs against (see targets.py): a QMP socket, the RAM size, a guest to drive."""

    kind: str  #: "qemu" or "emulator"
    socket_path: str
    ram_size: int

    def guest_run(self, live_command: str, emulated: dict) -> Any: ...


class Session:
    """One side running one conversation: its connection, values saved by steps, events not yet claimed."""

    def __init__(self, side: Side, timeout: float = 10.0) -> None:
        self.side = side
        self.conn = RawQMP(side.socket_path, timeout=timeout)
        self.saved: dict[str, Any] = {}
        self._events_seen = 0
        self._lines_seen = 0

    def observe(self, label: str, rule: str, replies: list[dict], value: Any = None,
                allow: tuple[str, ...] = (), sent: bytes = b"", claim_events: bool = True) -> Observation:
        events = self.conn.events[self._events_seen:] if claim_events else []
        lines = self.conn.lines[self._lines_seen:]
        if claim_events:
            self._events_seen = len(self.conn.events)
        self._lines_seen = len(self.conn.lines)
        return Observation(label, rule, replies, list(events), list(lines), value, allow, sent)

    def command(self, message: dict) -> dict:
        self.conn.send(message)
        return self.conn.reply()


class Step(Protocol):
    label: str

    def run(self, session: Session) -> Observation: ...


def _encode(message: Any) -> bytes:
    return message if isinstance(message, bytes) else json.dumps(message).encode()


@dataclass
class Send:
    message: Any
    label: str = ""
    rule: str = "exact"
    replies: int | str = 1
    allow: tuple[str, ...] = ()
    save: str | None = None  #: keep the (single) reply under this name in session.saved
    #: False: events that arrive meanwhile belong to the next step (whether a guest-driven event lands before or
    #: after this reply is a race, e.g. BALLOON_CHANGE right after ``balloon``).
    claim_events: bool = True
    #: keep the host wall-clock time the message was sent under this name (event timestamps are compared
    #: relative to it: ``Events(since=...)``)
    mark: str | None = None
    must_differ: bool = False  #: see Observation.must_differ

    def __post_init__(self) -> None:
        if not self.label:
            self.label = _encode(self.message).decode(errors="replace")[:100]

    def run(self, session: Session) -> Observation:
        if self.mark:
            session.saved[self.mark] = time.time()
        session.conn.send(self.message)
        if self.replies == SYNC:
            session.conn.send(SYNC_COMMAND)
            replies = session.conn.replies_until(SYNC_ID)
        else:
            replies = [session.conn.reply() for _ in range(int(self.replies))]
        if self.save and replies:
            session.saved[self.save] = replies[0]
        obs = session.observe(self.label, self.rule, replies, allow=self.allow, sent=_encode(self.message),
                              claim_events=self.claim_events)
        if self.replies == SYNC:  # the sentinel's own reply is framing, not part of what this step observed
            obs.lines = obs.lines[:-1]
        obs.must_differ = self.must_differ
        return obs


_NO_ID = object()


def command(name: str, arguments: dict | None = None, *, id: Any = _NO_ID, **step: Any) -> Send:
    """A :class:`Send` of ``{"execute": name, "arguments": arguments, "id": id}`` (keys only when given;
    ``id=None`` sends ``"id": null``)."""
    message: dict[str, Any] = {"execute": name}
    if arguments is not None:
        message["arguments"] = arguments
    if id is not _NO_ID:
        message["id"] = id
    return Send(message, **step)


@dataclass
class Poll:
    """Send ``message`` every ``every`` s until ``condition(reply, saved)`` or ``deadline`` s: value = held?"""

    message: dict
    condition: Callable[[dict, dict], bool]
    deadline: float
    label: str
    expect: bool | None = None
    every: float = 0.2
    save: str | None = None  #: keep the last reply under this name

    def run(self, session: Session) -> Observation:
        end = time.monotonic() + self.deadline
        held = False
        while True:
            reply = session.command(self.message)
            if self.condition(reply, session.saved):
                held = True
                break
            if time.monotonic() >= end:
                break
            time.sleep(self.every)
        if self.save:
            session.saved[self.save] = reply
        # The polling replies themselves are not compared (how many there were depends on timing); the
        # final one is, by the "poll" rule, together with whether the condition held.  Events that arrive
        # meanwhile are left to the next step (which of the polls they fall between is timing).
        obs = session.observe(self.label, "poll", [reply], value=held, claim_events=False)
        obs.expect = self.expect
        return obs


@dataclass
class Events:
    """Read until every name in ``names`` arrived (in any order) or ``deadline`` s passed."""

    names: Sequence[str]
    deadline: float
    label: str = ""
    rule: str = "events"
    until: Callable[[list[dict]], bool] | None = None  #: extra condition on the events of this step
    allow: tuple[str, ...] = ()
    #: a ``Send.mark``: the value observed is then each event's timestamp in seconds after that send (both
    #: sides run on this host, so QEMU's timestamps and ours share one wall clock)
    since: str | None = None

    def __post_init__(self) -> None:
        self.label = self.label or "events " + ", ".join(self.names)

    def run(self, session: Session) -> Observation:
        end = time.monotonic() + self.deadline
        start = session._events_seen
        while (left := end - time.monotonic()) > 0:
            new = session.conn.events[start:]
            names = [e["event"] for e in new]
            if all(n in names for n in self.names) and (self.until is None or self.until(new)):
                break
            session.conn.pump_events(min(left, 0.1))
        obs = session.observe(self.label, self.rule, [], allow=self.allow)
        if self.since is not None:
            t0 = session.saved[self.since]
            obs.value = [(e["event"], round(e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6 - t0, 3))
                         for e in obs.events]
        return obs


@dataclass
class ReportTimes:
    """Poll guest-stats every ``every`` s until ``count`` reports arrived (a report: the reply changed) or
    ``deadline`` s passed (a report that lands in the same second as the one before, with the same values, cannot
    be told from none: conversations start it more than a second after the last report).  Observes ``[start to
    first report, first to second, ...]`` in seconds, as seen by this client (``every`` is the resolution);
    ``expect`` is what docs/qemu-behaviour.md (B) says QEMU does (``[0, 1, 1]``: a report at once, then 1 s apart;
    None: not compared), checked on real QEMU as well.

    ``since`` names a ``Send.mark`` (the start is then when that command was sent) and ``baseline`` a saved
    guest-stats reply read before it: a report that lands before this step's first read still counts (QEMU
    answers a switch from off to on within milliseconds, often before the qom-set's reply is even read)."""

    count: int
    deadline: float
    label: str
    expect: list[float | None] | None = None
    since: str | None = None
    baseline: str | None = None
    every: float = 0.02

    def run(self, session: Session) -> Observation:
        start = session.saved[self.since] if self.since else time.time()
        reply = session.saved[self.baseline] if self.baseline else session.command(STATS_QUERY)
        last = reply.get("return")
        arrivals: list[float] = []
        while len(arrivals) < self.count and time.time() - start < self.deadline:
            now = session.command(STATS_QUERY).get("return")
            if now != last:  # a report: last-update moved, or (in the same second) the values did
                arrivals.append(time.time())
                last = now
            time.sleep(self.every)
        gaps = [round(b - a, 3) for a, b in zip([start, *arrivals], arrivals)]
        obs = session.observe(self.label, "timing", [], value=gaps, claim_events=False)  # replies: by the gaps
        obs.expect = self.expect
        return obs


#: The query ReportTimes polls (the balloon at its usual id).
STATS_QUERY = {"execute": "qom-get", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats"}}


@dataclass
class Pause:
    """Let ``seconds`` of wall time pass, keeping events (used where nothing may change meanwhile)."""

    seconds: float
    label: str = "pause"
    allow: tuple[str, ...] = ()

    def run(self, session: Session) -> Observation:
        session.conn.pump_events(self.seconds)
        return session.observe(self.label, "events", [], allow=self.allow)


@dataclass
class GuestRun:
    """Make the guest do something: ``live`` is a shell command for a real guest, ``emulated`` the arguments of
    the emulator's ``x-balloonlab-guest``.  Its own output is not compared (the two guests differ by design)."""

    live: str
    emulated: dict
    label: str

    def run(self, session: Session) -> Observation:
        if session.side.kind == "emulator":
            reply = session.command({"execute": "x-balloonlab-guest", "arguments": self.emulated})
            if "error" in reply:
                raise AssertionError(f"x-balloonlab-guest {self.emulated} failed: {reply}")
        else:
            session.side.guest_run(self.live, self.emulated)
        return session.observe(self.label, "none", [])


@dataclass
class QomWalk:
    """``qom-list`` a path, ``qom-get`` every property it lists and, with ``set_current``, ``qom-set`` each one
    to the value just read (a no-op where it is allowed; QEMU's own refusal everywhere else).  Each side walks its
    own listing; all the replies are compared in order as one step."""

    path: str
    set_current: bool = False
    skip: tuple[str, ...] = ()  #: properties not to write (none needed on a balloon device)
    label: str = ""
    rule: str = "exact"
    allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.label = self.label or f"walk {self.path}" + (" (get and set)" if self.set_current else " (get)")

    def run(self, session: Session) -> Observation:
        listing = session.command({"execute": "qom-list", "arguments": {"path": self.path}})
        # observed: the listing, then one record per property {"property", "get"[, "set"]} (records rather than
        # bare replies, so a documented difference can drop a property with everything said about it)
        replies = [listing]
        for prop in listing.get("return", []):
            get = {"execute": "qom-get", "arguments": {"path": self.path, "property": prop["name"]}}
            record = {"property": prop["name"], "get": session.command(get)}
            if self.set_current and "return" in record["get"] and prop["name"] not in self.skip:
                record["set"] = session.command({"execute": "qom-set", "arguments": {
                    "path": self.path, "property": prop["name"], "value": record["get"]["return"]}})
            replies.append(record)
        return session.observe(self.label, self.rule, replies, allow=self.allow)


@dataclass
class SecondClient:
    """While this conversation's client is connected, a second one connects: is it greeted within ``wait`` s?

    QEMU serves one client per monitor; a second connection waits in the listen backlog (the value is
    ``{"greeted": False}`` on real QEMU).  The second client then disconnects without a word."""

    wait: float = 1.0
    label: str = "a second client connects"

    def run(self, session: Session) -> Observation:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as second:
            second.connect(session.side.socket_path)
            greeted = bool(select.select([second], [], [], self.wait)[0]) and bool(second.recv(65536))
        return session.observe(self.label, "exact", [], value={"greeted": greeted}, allow=("concurrent-clients",))


@dataclass
class Handover:
    """A second client connects, then the first one disconnects: the second is greeted and the conversation
    continues on it, not negotiated (events must not reach it until it negotiates)."""

    label: str = "hand over to a second client"

    def run(self, session: Session) -> Observation:
        old = session.conn
        pending = RawQMP(old.path, old.timeout, greet=False)
        old.close()
        pending.read_greeting()
        session.conn, session._events_seen, session._lines_seen = pending, 0, 0
        return session.observe(self.label, "greeting", [pending.greeting], allow=("qemu-point-release",))


@dataclass
class Quit:
    label: str = "quit"

    def run(self, session: Session) -> Observation:
        session.conn.send({"execute": "quit"})
        reply = session.conn.reply()
        closed = session.conn.wait_closed(10.0)
        return session.observe(self.label, "exact", [reply], value={"closed": closed})


@dataclass
class Conversation:
    name: str
    steps: list[Step]
    negotiate: bool = True  #: send qmp_capabilities first (not compared as a step of its own)


def run_conversation(conversation: Conversation, side: Side) -> list[Observation]:
    """Run every step against ``side`` on a fresh connection; the greeting is observation 0."""
    session = Session(side)
    try:
        observations = [session.observe("greeting", "greeting", [session.conn.greeting],
                                        allow=("qemu-point-release",))]
        if conversation.negotiate:
            reply = session.command({"execute": "qmp_capabilities"})
            if reply != {"return": {}}:
                raise AssertionError(f"{side.kind}: qmp_capabilities answered {reply!r}")
            session.observe("qmp_capabilities", "exact", [reply])
        for step in conversation.steps:
            observations.append(step.run(session))
        return observations
    finally:
        session.conn.close()
