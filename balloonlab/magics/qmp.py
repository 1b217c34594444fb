"""``%%qmp``: send parsed QMP commands to a lab and show QEMU's replies as QEMU sends them.

Why replies are rebuilt as wire messages: the cell is for people reading QEMU's docs side by side, so a reply must
look like the docs (``{"return": {}}``, ``{"error": {"class": "GenericError", "desc": ...}}``) and not like a
Python exception.  An error reply is a normal answer of QEMU, so it is shown (on stderr, so a notebook marks it)
and never raised; the next command still runs.  Only a dead connection stops the cell (it raises
``BalloonDisconnectedError``, one line).  Events that arrived while a command ran are shown after its reply, one
line each.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Sequence, TextIO

from ..errors import QMPError
from .qmp_text import QMPCommand, format_message

__all__ = ["execute_wire", "run_commands"]


def execute_wire(lab: Any, command: QMPCommand) -> dict:
    """Send one command through the lab; the reply as QEMU put it on the wire (``return`` or ``error``, ``id``)."""
    try:
        value = lab.qmp(command.execute, command.arguments)  # a dict: argument names need not be identifiers
        reply: dict[str, Any] = {"return": value}
    except QMPError as exc:
        reply = {"error": exc.to_wire()}
    if command.has_id:
        reply["id"] = command.id
    return reply


class _EventCollector:
    """Collects the lab's QMP events (they arrive on its background thread) until drained."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict] = []

    def __call__(self, update: Any) -> None:
        if getattr(update, "kind", None) == "event" and getattr(update, "event", None) is not None:
            with self._lock:
                self._events.append(update.event)

    def drain(self) -> list[dict]:
        with self._lock:
            events, self._events = self._events, []
        return events


def run_commands(
    lab: Any,
    commands: Sequence[QMPCommand],
    *,
    verbose: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[dict]:
    """Send ``commands`` in order and show each reply (and the events that came meanwhile); returns the replies.

    ``verbose`` writes a transcript (``-> request``, ``<- reply``) as in QEMU's protocol spec, which ``%%qmp``
    reads back unchanged.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    collector = _EventCollector()
    unsubscribe = lab.subscribe(collector)
    replies: list[dict] = []
    try:
        for command in commands:
            if verbose:
                _write(out, err, "-> " + format_message(command.to_wire(), width=10**6), error=False)
            reply = execute_wire(lab, command)
            replies.append(reply)
            _write(out, err, _shown(reply, verbose), error="error" in reply)
            for event in collector.drain():
                _write(out, err, _shown(event, verbose, one_line=True), error=False)
    finally:
        unsubscribe()
    for event in collector.drain():
        _write(out, err, _shown(event, verbose, one_line=True), error=False)
    return replies


def _shown(msg: dict, verbose: bool, one_line: bool = False) -> str:
    # Events are one line each, as QEMU's docs write them; a long reply is indented so it can be read.
    text = format_message(msg, width=10**6 if one_line else 78)
    return "<- " + text if verbose else text


def _write(out: TextIO, err: TextIO, text: str, *, error: bool) -> None:
    # Flush the other stream first so that replies and errors appear in the order QEMU sent them.
    stream, other = (err, out) if error else (out, err)
    other.flush()
    stream.write(text + "\n")
    stream.flush()
