"""The QMP commands the emulator answers, with their argument schemas, checked as QEMU's marshallers check them.

QEMU's generated marshallers visit the arguments in schema order (a missing one: ``Parameter 'X' is missing``;
a wrong JSON type: ``Invalid parameter type for 'X', expected: T``) and then refuse leftovers
(``Parameter 'X' is unexpected``).  :func:`check_arguments` does the same, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import QMPError
from .qom import is_int64, type_error


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  #: "str" | "int" | "number" | "bool" | "any"
    optional: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Arg, ...] = ()
    #: extra members allowed (x-balloonlab-guest passes its action's parameters through)
    open: bool = False


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("query-version"),
    Command("query-status"),
    Command("query-commands"),
    Command("query-balloon"),
    Command("balloon", (Arg("value", "int"),)),
    Command("query-memory-size-summary"),
    Command("qom-list", (Arg("path", "str"),)),
    Command("qom-get", (Arg("path", "str"), Arg("property", "str"))),
    Command("qom-set", (Arg("path", "str"), Arg("property", "str"), Arg("value", "any"))),
    Command("stop"),
    Command("cont"),
    Command("system_reset"),
    Command("quit"),
    Command("x-query-virtio"),
    Command("x-query-virtio-status", (Arg("path", "str"),)),
    Command("x-balloonlab-advance", (Arg("seconds", "number"),)),
    Command("x-balloonlab-status"),
    Command("x-balloonlab-trace", (Arg("path", "str", True), Arg("since", "int", True))),
    Command("x-balloonlab-reports", (Arg("path", "str", True), Arg("since", "int", True))),
    Command("x-balloonlab-guest", (Arg("action", "str"),), open=True),
)}

_EXPECTED = {"str": "string", "int": "integer", "number": "number", "bool": "boolean"}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return is_int64(value)
    if kind == "number":
        return not isinstance(value, bool) and isinstance(value, (int, float))
    raise AssertionError(kind)


def check_arguments(command: Command, arguments: dict) -> dict:
    """The arguments, checked as QEMU does; raises QMPError with QEMU's words."""
    for arg in command.args:
        if arg.name not in arguments:
            if arg.optional:
                continue
            raise QMPError("GenericError", f"Parameter '{arg.name}' is missing")
        if not _type_ok(arg.type, arguments[arg.name]):
            raise type_error(arg.name, _EXPECTED[arg.type])
    if not command.open:
        known = {a.name for a in command.args}
        for name in arguments:
            if name not in known:
                raise QMPError("GenericError", f"Parameter '{name}' is unexpected")
    return arguments


def lookup(name: str) -> Command:
    try:
        return COMMANDS[name]
    except KeyError:
        raise QMPError("CommandNotFound", f"The command {name} has not been found") from None
