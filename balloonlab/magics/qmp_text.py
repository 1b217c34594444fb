"""QMP commands as people write them: the text of a ``%%qmp`` cell (or any QMP transcript) into commands.

Why a parser of our own: people paste from three places, and each writes QMP differently.

* QEMU's docs: one or more JSON objects, often spread over several lines, commands and QEMU's replies mixed
  (``docs/interop/virtio-balloon-stats.rst`` shows each command followed by ``{ "return": {} }``).
* QEMU's protocol spec and ``qmp-shell -v`` transcripts: lines prefixed ``-> `` (client) and ``<- `` (server).
* ``qmp-shell``'s own form: ``qom-get path=/machine/peripheral/balloon0 property=guest-stats``, values as JSON
  when they parse as JSON and as strings otherwise, dotted keys for nested objects (``a.b=1``).

So the text is read as a stream: a ``{`` starts a JSON value (as QEMU's own JSON streamer reads its socket, not
line by line), anything else starts a one-line qmp-shell command, ``#`` starts a comment line.  QEMU's replies and
events (objects with ``return``, ``error``, ``event`` or ``QMP``, and anything on a ``<- `` line) are part of the
transcript, not commands: they are skipped, so a doc example runs verbatim.

Every command is checked the way QEMU checks a request (same words: "QMP input member 'exec' is unexpected")
before any is sent, so a cell with a typo in its third command changes nothing on the device.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import QMPTextError

__all__ = ["QMPCommand", "QMPTextError", "parse_qmp_text", "parse_shell_command", "format_message"]

#: Members that make a JSON object something QEMU sent (a reply, an event, the greeting), not a command.
_SERVER_MEMBERS = ("return", "error", "event", "QMP")
_PREFIX_RE = re.compile(r"^([ \t]*)(->|<-)[ \t]?")
_NO_ID = object()


@dataclass(frozen=True)
class QMPCommand:
    """One command to send: ``execute`` with ``arguments``; ``id`` only if the text gave one."""

    execute: str
    arguments: dict = field(default_factory=dict)
    id: Any = _NO_ID
    line: int = 1  #: where it starts in the text, for messages

    @property
    def has_id(self) -> bool:
        return self.id is not _NO_ID

    def to_wire(self) -> dict:
        """The request as it goes on the wire (``arguments`` left out when empty, as QEMU's docs write it)."""
        msg: dict[str, Any] = {"execute": self.execute}
        if self.arguments:
            msg["arguments"] = self.arguments
        if self.has_id:
            msg["id"] = self.id
        return msg


def format_message(msg: Any, width: int = 78) -> str:
    """A QMP message for people: on one line when it fits (``{"return": {}}``), else indented like QEMU's docs."""
    one_line = json.dumps(msg)
    if len(one_line) <= width:
        return one_line
    return json.dumps(msg, indent=4)


def parse_qmp_text(text: str, first_line: int = 1) -> list[QMPCommand]:
    """Every command in ``text``, in order; QEMU's replies and events in it are skipped.

    ``first_line`` is the number of the text's first line in the messages (2 for the body of a ``%%qmp`` cell,
    whose first line is the magic itself).  Raises :class:`QMPTextError` for anything that is not a command.
    """
    blanked, server_lines = _strip_prefixes(text)
    commands: list[QMPCommand] = []
    pos, n = 0, len(blanked)
    while pos < n:
        ch = blanked[pos]
        if ch.isspace():
            pos += 1
            continue
        line_index = blanked.count("\n", 0, pos)
        line = first_line + line_index
        if ch == "#":
            pos = _end_of_line(blanked, pos)
            continue
        if ch in "{[\"'":
            value, pos = _decode_json(blanked, pos, first_line)
            if line_index in server_lines or _is_server_message(value):
                continue  # QEMU's side of a transcript (a doc's expected reply): not ours to send
            commands.append(_check_request(value, line))
            continue
        end = _end_of_line(blanked, pos)
        if line_index in server_lines:
            pos = end
            continue
        commands.append(parse_shell_command(blanked[pos:end], line))
        pos = end
    return commands


def parse_shell_command(text: str, line: int = 1) -> QMPCommand:
    """A qmp-shell command line: ``command key=value key.sub=value ...``.

    Values are JSON where they parse as JSON (``2``, ``true``, ``null``, ``"a b"``, ``{"x": 1}``) and strings
    otherwise (``/machine/peripheral-anon/device[1]``); dotted keys build nested objects, as in qmp-shell.
    """
    tokens = _split_tokens(text, line)
    if not tokens:
        raise QMPTextError("empty command", line)
    name, *pairs = tokens
    if name == "transaction(":
        raise QMPTextError("qmp-shell's transaction( ... ) form is not supported; write the JSON object", line)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]*", name):
        raise QMPTextError(
            f"{name!r} is not a QMP command name; write a JSON object ({{\"execute\": ...}}) or qmp-shell's "
            "'command key=value ...'", line)
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise QMPTextError(f"expected a key=value pair, got {pair!r}", line)
        _set_dotted(arguments, key, _shell_value(raw), line)
    return QMPCommand(name, arguments, line=line)


# --------------------------------------------------------------------------------------------------------------


def _strip_prefixes(text: str) -> tuple[str, set[int]]:
    """Blank out ``-> ``/``<- `` transcript prefixes (keeping every offset) and note the ``<-`` lines."""
    lines = text.split("\n")
    server_lines: set[int] = set()
    for i, raw in enumerate(lines):
        m = _PREFIX_RE.match(raw)
        if m:
            if m.group(2) == "<-":
                server_lines.add(i)
            lines[i] = " " * m.end() + raw[m.end():]
    return "\n".join(lines), server_lines


def _decode_json(text: str, start: int, first_line: int) -> tuple[Any, int]:
    """The JSON value at ``start`` and where it ends, read as QEMU's parser reads it.

    QEMU's JSON parser also takes single-quoted strings (``{ 'execute': 'stop' }``, an extension its protocol
    spec documents and older docs use); they are rewritten to standard JSON before decoding.
    """
    end, single_quoted = _json_extent(text, start, first_line)
    snippet = text[start:end]
    try:
        value = json.loads(_double_quoted(snippet) if single_quoted else snippet)
    except json.JSONDecodeError as exc:
        line_start = text.rfind("\n", 0, start) + 1
        column = exc.colno + (start - line_start if exc.lineno == 1 else 0)
        raise QMPTextError(f"JSON parse error: {exc.msg} (column {column}); write QMP as QEMU's docs do: "
                           "no trailing commas, quoted member names",
                           first_line + text.count("\n", 0, start) + exc.lineno - 1) from None
    return value, end


class _Strings:
    """Where a left-to-right scan stands with respect to ``"..."`` and ``'...'`` strings (backslash escapes
    honoured): the one string-skipping rule of both the JSON extent scan and the qmp-shell tokenizer."""

    __slots__ = ("quote", "_escaped")

    def __init__(self) -> None:
        self.quote = ""  # the quote of the string the scan is in; "" outside strings
        self._escaped = False

    def feed(self, ch: str) -> bool:
        """Advance over ``ch``; True when it belongs to a string (its opening and closing quotes included)."""
        if self.quote:
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == self.quote:
                self.quote = ""
            return True
        if ch in "\"'":
            self.quote = ch
            return True
        return False


def _json_extent(text: str, start: int, first_line: int) -> tuple[int, bool]:
    """End of the JSON value starting at ``start`` (brackets balanced, strings skipped); also whether it has
    single-quoted strings."""
    strings = _Strings()
    depth, single = 0, False
    for i in range(start, len(text)):
        ch = text[i]
        if strings.feed(ch):
            single = single or strings.quote == "'"
            if not strings.quote and depth == 0:  # the closing quote of a top-level string
                return i + 1, single
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1, single
    what = "string" if strings.quote else "object"
    raise QMPTextError(f"JSON parse error: unterminated {what} at the end of the cell",
                       first_line + text.count("\n", 0, start))


def _double_quoted(snippet: str) -> str:
    """Rewrite QEMU's single-quoted strings as JSON strings (``\\'`` unescaped, bare ``"`` escaped)."""
    out: list[str] = []
    i, n = 0, len(snippet)
    while i < n:
        ch = snippet[i]
        if ch not in "\"'":
            out.append(ch)
            i += 1
            continue
        j, body = i + 1, []
        while j < n and snippet[j] != ch:
            if snippet[j] == "\\" and j + 1 < n:
                pair = snippet[j:j + 2]
                body.append("'" if pair == "\\'" else pair)
                j += 2
                continue
            body.append('\\"' if snippet[j] == '"' else snippet[j])
            j += 1
        out.append('"' + "".join(body) + '"')
        i = j + 1
    return "".join(out)


def _end_of_line(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


def _is_server_message(value: Any) -> bool:
    return isinstance(value, dict) and "execute" not in value and "exec-oob" not in value and any(
        k in value for k in _SERVER_MEMBERS)


def _check_request(value: Any, line: int) -> QMPCommand:
    """QEMU's own checks of a request (``qmp_dispatch_check_obj``), in QEMU's words, plus our one restriction."""
    if not isinstance(value, dict):
        raise QMPTextError("QMP input must be a JSON object", line)
    if "exec-oob" in value:
        raise QMPTextError("%%qmp sends in-band commands only: write \"execute\", not \"exec-oob\"", line)
    for member, member_value in value.items():
        if member == "execute":
            if not isinstance(member_value, str):
                raise QMPTextError("QMP input member 'execute' must be a string", line)
        elif member == "arguments":
            if not isinstance(member_value, dict):
                raise QMPTextError("QMP input member 'arguments' must be an object", line)
        elif member != "id":
            raise QMPTextError(f"QMP input member '{member}' is unexpected", line)
    if "execute" not in value:
        raise QMPTextError("QMP input lacks member 'execute'", line)
    return QMPCommand(value["execute"], dict(value.get("arguments", {})), value.get("id", _NO_ID), line)


def _split_tokens(text: str, line: int) -> list[str]:
    """Whitespace-separated tokens, where quotes and brackets hold spaces (``x={"a": 1}``, ``p="a b"``)."""
    tokens: list[str] = []
    current: list[str] = []
    strings = _Strings()
    depth = 0
    for ch in text.strip():
        if strings.feed(ch):
            current.append(ch)
            continue
        if ch.isspace() and depth == 0:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(ch)
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth = max(0, depth - 1)
    if strings.quote:
        raise QMPTextError(f"unterminated {strings.quote} quote", line)
    if current:
        tokens.append("".join(current))
    return tokens


def _shell_value(raw: str) -> Any:
    """JSON if it is JSON, else the text itself (single-quoted text loses its quotes, as in a shell)."""
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if raw in ("True", "False"):  # qmp-shell accepts these spellings too
        return raw == "True"
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _set_dotted(target: dict, key: str, value: Any, line: int) -> None:
    parts = key.split(".")
    node = target
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise QMPTextError(f"cannot use '{'.'.join(parts[:depth + 1])}' as both leaf and non-leaf key", line)
        node = child
    leaf = parts[-1]
    if leaf in node:
        if isinstance(node[leaf], dict):
            raise QMPTextError(f"cannot use '{key}' as both leaf and non-leaf key", line)
        raise QMPTextError(f"cannot set '{key}' more than once", line)
    node[leaf] = value
