"""QEMU's JSON dialect, both ways: the streaming reader of QMP input and the writer of QMP output.

Why not ``json``: QMP input is a *stream* of JSON values with no framing (``qemu.qmp`` sends objects with no
newline), QEMU answers broken input with its own error texts (``JSON parse error, stray '%'``), keeps the
connection usable by resynchronising at the next structural character, bounds every message (64 MiB of tokens,
2 Mi tokens, nesting depth 1024), accepts single-quoted strings, and writes numbers, strings and escapes in
its own way (``%.17g``, ``\\u00E9``).  Clients see all of that, so the emulator reproduces it.

The three stages mirror QEMU's ``qobject/json-lexer.c``, ``json-streamer.c`` and ``json-parser.c`` (7.2 and
later): the :class:`JSONMessageReader` lexes bytes into tokens (with error recovery), groups tokens into
messages by bracket counting (with the limits), and parses each complete message.  It produces, in order,
either a value or the error text QEMU would send for it.  The parser and the writer are iterative, so the
deepest message QEMU accepts cannot exhaust Python's recursion limit.

Objects come out in QEMU's QDict order (:func:`qdict_ordered`).  Numbers keep QEMU's types: an integer token
that fits int64 or uint64 is an ``int``; any other integer and every fraction or exponent is a ``float``
(``2.0`` stays a float; ``2**64`` becomes ``1.8446744073709552e+19``, as QEMU's parser does).  Strings are
``str``; ``\\u0000`` and the modified-UTF-8 ``C0 80`` are allowed.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, NamedTuple

#: Bounds from QEMU's json-streamer.c (per message).
MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10

# Token types (only the parser looks at them).
LCURLY, RCURLY, LSQUARE, RSQUARE, COLON, COMMA, INTEGER, FLOAT, KEYWORD, STRING = range(10)
_STRUCTURAL = {ord("{"): LCURLY, ord("}"): RCURLY, ord("["): LSQUARE, ord("]"): RSQUARE,
               ord(":"): COLON, ord(","): COMMA}

# Lexer states.
(_START, _RECOVERY, _DQ, _DQ_ESC, _SQ, _SQ_ESC, _ZERO, _SIGN, _DIGITS, _MANTISSA, _MANTISSA_DIGITS, _EXP_E,
 _EXP_SIGN, _EXP_DIGITS, _KEYWORD) = range(15)

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
# In recovery QEMU skips everything but structural characters, control characters other than tab, and the
# impossible UTF-8 bytes 0xFE/0xFF (clients send those to force a resynchronisation).
_RECOVERY_SKIP = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")
_DQ_RUN = re.compile(rb'[^"\\\x00-\x1f\xfe\xff]*')
_SQ_RUN = re.compile(rb"[^'\\\x00-\x1f\xfe\xff]*")
_DIGIT_RUN = re.compile(rb"[0-9]*")
_KEYWORD_RUN = re.compile(rb"[a-z]*")
_ESCAPES = {ord('"'): '"', ord("'"): "'", ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f",
            ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
_NONCHARACTER = re.compile(f"[{_NONCHARACTERS}]")
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")


def _end_of(run: re.Pattern[bytes], data: bytes, i: int, stop: int | None = None) -> int:
    """Where ``run`` (a pattern that also matches the empty string, so it always matches) ends, from ``i``."""
    match = run.match(data, i, len(data) if stop is None else stop)
    assert match is not None  # every run pattern above ends in ``*``
    return match.end()


#: QEMU's QDict is a hash table of this many buckets; its iteration order is the order of QEMU's JSON output.
QDICT_BUCKETS = 512


@functools.lru_cache(maxsize=4096)
def qdict_hash(key: str) -> int:
    """QEMU's tdb_hash() of a QDict key (keys are modified UTF-8 C strings: U+0000 is C0 80)."""
    data = key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_ordered(d: dict) -> dict:
    """``d`` (keys in insertion order) as QEMU's QDict iterates it: ascending bucket, newest first in a bucket.

    Every object QEMU parses is a QDict, so this is the order in which QEMU checks a request's members and in
    which it echoes an object back (an ``id`` such as ``{"b": 1, "a": 2}`` comes back as ``{"a": 2, "b": 1}``).
    """
    if len(d) < 2:
        return d
    ranked = sorted(enumerate(d), key=lambda p: (qdict_hash(p[1]) % QDICT_BUCKETS, -p[0]))
    return {key: d[key] for _, key in ranked}


class Message(NamedTuple):
    """One complete input message: a parsed value, or (``error`` set) the text of QEMU's error reply."""

    value: Any
    error: str | None = None


class _ParseError(Exception):
    pass


# -- modified UTF-8, as QEMU's util/unicode.c reads it --------------------------------------------------------------
def _valid_codepoint(cp: int) -> bool:
    return 0 <= cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF and not 0xFDD0 <= cp <= 0xFDEF \
        and (cp & 0xFFFE) != 0xFFFE


def _codepoint(data: bytes, i: int) -> tuple[int, int]:
    """QEMU's mod_utf8_codepoint at ``data[i]``: (code point or -1, bytes consumed)."""
    byte = data[i]
    if byte < 0x80:
        return byte, 1
    if byte >= 0xFE or not byte & 0x40:
        return -1, 1
    length, mask = 0, 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for k in range(1, length):
        nxt = data[i + k] if i + k < len(data) else 0
        if nxt & 0xC0 != 0x80:
            return -1, k
        cp = cp << 6 | (nxt & 0x3F)
    min_cp = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
    if not _valid_codepoint(cp) or (cp < min_cp and not (cp == 0 and length == 2)):
        return -1, length
    return cp, length


def _decode_escaped_run(run: re.Match) -> str:
    data = bytes(ord(c) - 0xDC00 for c in run.group())
    out, i = [], 0
    while i < len(data):
        cp, n = _codepoint(data, i)
        out.append(chr(cp) if cp >= 0 else "\ufffd")
        i += n
    return "".join(out)


def qemu_text(raw: bytes) -> str:
    """C-string bytes as QEMU prints them in a reply: cut at NUL, each bad sequence one U+FFFD."""
    raw = raw.split(b"\0", 1)[0]
    if raw.isascii():
        return raw.decode("ascii")
    text = raw.decode("utf-8", "surrogateescape")
    text = _ESCAPED_BYTES.sub(_decode_escaped_run, text)
    return _NONCHARACTER.sub("\ufffd", text)


def _decode_plain(segment: bytes) -> str:
    """Unescaped string content; QEMU refuses invalid UTF-8, surrogates, noncharacters, overlong forms but C0 80."""
    if segment.isascii():
        return segment.decode("ascii")
    try:
        text = segment.replace(b"\xc0\x80", b"\0").decode("utf-8")
    except UnicodeDecodeError:
        raise _ParseError("invalid UTF-8 sequence in string") from None
    if _NONCHARACTER.search(text):
        raise _ParseError("invalid UTF-8 sequence in string")
    return text


def _hex4(raw: bytes, at: int) -> int:
    digits = raw[at:at + 4]
    return int(digits, 16) if _HEX4.fullmatch(digits) else -1


def parse_string(raw: bytes) -> str:
    """A STRING token (quotes included) as QEMU's parse_string() decodes it; raises _ParseError."""
    out: list[str] = []
    pos, end = 1, len(raw) - 1
    while True:
        k = raw.find(b"\\", pos, end)
        plain = raw[pos:end if k < 0 else k]
        if plain:
            out.append(_decode_plain(plain))
        if k < 0:
            return "".join(out)
        kind = raw[k + 1]
        if kind in _ESCAPES:
            out.append(_ESCAPES[kind])
            pos = k + 2
            continue
        if kind != ord("u"):
            raise _ParseError("invalid escape sequence in string")
        cp, ptr = _hex4(raw, k + 2), k + 6
        if 0xD800 <= cp <= 0xDBFF and raw[ptr:ptr + 2] == b"\\u":
            trailing = _hex4(raw, ptr + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                ptr += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            raise _ParseError(f"{qemu_text(raw[k:ptr])} is not a valid Unicode character")
        out.append(chr(cp))
        pos = ptr


def _number(kind: int, raw: bytes) -> int | float:
    if kind == INTEGER:
        digits = len(raw) - raw.startswith(b"-")
        if digits <= 20:  # longer never fits 64 bits (and int() of huge strings is slow)
            value = int(raw)
            if -(1 << 63) <= value < 1 << 64:
                return value
    return float(raw)


def _scalar(kind: int, raw: bytes) -> Any:
    if kind == STRING:
        return parse_string(raw)
    if kind in (INTEGER, FLOAT):
        return _number(kind, raw)
    if raw == b"true":
        return True
    if raw == b"false":
        return False
    if raw == b"null":
        return None
    raise _ParseError(f"invalid keyword '{raw.decode('ascii')}'")


_OPEN = (LCURLY, LSQUARE)
_CLOSE = {LCURLY: RCURLY, LSQUARE: RSQUARE}


def parse_tokens(kinds: bytearray, raws: list) -> Any:
    """QEMU's recursive-descent json_parser_parse(), as a loop: same acceptance, same first error."""
    n = len(kinds)
    pos = 0
    # Each frame: [container, key or None, expecting_key]; a dict frame expecting a key parses the key as a value.
    stack: list[list] = []

    def take() -> int:
        nonlocal pos
        if pos >= n:
            raise _ParseError("premature EOI")
        pos += 1
        return kinds[pos - 1]

    while True:
        # -- parse one value at pos --
        if pos >= n:
            raise _ParseError("premature EOI")
        kind = kinds[pos]
        if kind in _OPEN:
            pos += 1
            if pos >= n:
                raise _ParseError("premature EOI")
            if kinds[pos] == _CLOSE[kind]:
                pos += 1
                value: Any = {} if kind == LCURLY else []
            else:
                stack.append([{} if kind == LCURLY else [], None, kind == LCURLY])
                continue
        elif kind in (INTEGER, FLOAT, STRING, KEYWORD):
            value = _scalar(kind, raws[pos])
            pos += 1
        else:
            raise _ParseError("expecting value")
        # -- hand the value to its container, closing every container that ends here --
        while True:
            if not stack:
                return value
            frame = stack[-1]
            container = frame[0]
            if isinstance(container, list):
                container.append(value)
                sep = take()
                if sep == RSQUARE:
                    value = stack.pop()[0]
                    continue
                if sep != COMMA:
                    raise _ParseError("expected separator in list")
                break
            if frame[2]:  # that value was a key
                if not isinstance(value, str):
                    raise _ParseError("key is not a string in object")
                if take() != COLON:
                    raise _ParseError("missing : in object pair")
                frame[1], frame[2] = value, False
                break
            if frame[1] in container:
                raise _ParseError("duplicate key")
            container[frame[1]] = value
            sep = take()
            if sep == RCURLY:
                value = qdict_ordered(stack.pop()[0])
                continue
            if sep != COMMA:
                raise _ParseError("expected separator in dict")
            frame[2] = True
            break


class _NotPlain(Exception):
    """Raised inside the fast path: this input needs QEMU's own rules (the token-by-token reader)."""


def _plain_int(text: str) -> int | float:
    return _number(INTEGER, text.encode("ascii"))


def _no_constant(text: str) -> Any:
    raise _NotPlain(text)  # NaN, Infinity, -Infinity: Python's extensions, strays for QEMU


def _plain_object(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotPlain("duplicate key")  # QEMU's error text comes from the token-by-token reader
    return qdict_ordered(obj)


#: Python's C scanner, told to build what parse_tokens builds: QEMU's integers, QDict order, no extensions.
_PLAIN_DECODER = json.JSONDecoder(object_pairs_hook=_plain_object, parse_int=_plain_int, parse_constant=_no_constant)
_PLAIN_WHITESPACE = re.compile(r"[ \t\r\n]*")
#: The fast path takes at most this much input at once: far below the token-count limit (2 Mi tokens).
_FAST_LIMIT = 1 << 16


class JSONMessageReader:
    """Bytes in, :class:`Message` objects out, exactly as QEMU's JSON message parser splits and judges them.

    ``feed(data)`` may be called with any slicing of the stream (one byte at a time, or megabytes); it returns
    the messages completed by that data.  Memory is bounded by QEMU's per-message limits.

    Fast path: what clients send almost always is whole objects of plain JSON (ASCII, no escapes, no quirks).
    Between messages, such input goes to Python's C scanner, configured to build exactly what the token-by-token
    reader builds; anything it does not take as plain (an error, a quirk QEMU accepts, a message cut by the
    read) goes through the token-by-token reader from that point on.  ``fast=False`` reads everything token by
    token (tests/test_emulator_json_fast.py checks that both give the same messages for any input and slicing).
    """

    def __init__(self, fast: bool = True) -> None:
        self._fast = fast
        self._state = _START
        self._token = bytearray()
        self._out: list[Message] = []
        self._reset_message()

    def _feed_plain(self, data: bytes) -> int:
        """Take the whole plain objects at the start of ``data``; return how many bytes were taken."""
        if (len(data) > _FAST_LIMIT or not data.isascii() or b"\\" in data
                or data.count(b"{") + data.count(b"[") > MAX_NESTING):
            return 0
        text = data.decode("ascii")
        pos, n = 0, len(text)
        while True:
            pos = _PLAIN_WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= n or text[pos] != "{":
                return pos
            try:
                value, end = _PLAIN_DECODER.raw_decode(text, pos)
            except (ValueError, RecursionError, _NotPlain):
                return pos
            self._out.append(Message(value))
            pos = end

    # -- streamer (json-streamer.c) --
    def _reset_message(self) -> None:
        self._kinds = bytearray()
        self._raws: list = []
        self._braces = self._brackets = 0
        self._size = 0

    def _fail(self, desc: str) -> None:
        self._reset_message()
        self._out.append(Message(None, desc))

    def _token_done(self, kind: int, raw: bytes) -> None:
        if kind == LCURLY:
            self._braces += 1
        elif kind == RCURLY:
            self._braces -= 1
        elif kind == LSQUARE:
            self._brackets += 1
        elif kind == RSQUARE:
            self._brackets -= 1
        if self._size + len(raw) + 1 > MAX_TOKEN_SIZE:
            return self._fail("JSON token size limit exceeded")
        if len(self._kinds) + 1 > MAX_TOKEN_COUNT:
            return self._fail("JSON token count limit exceeded")
        if self._braces + self._brackets > MAX_NESTING:
            return self._fail("JSON nesting depth limit exceeded")
        self._kinds.append(kind)
        self._raws.append(raw if kind >= INTEGER else None)
        self._size += len(raw)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return None
        kinds, raws = self._kinds, self._raws
        self._reset_message()
        try:
            self._out.append(Message(parse_tokens(kinds, raws)))
        except _ParseError as exc:
            self._out.append(Message(None, f"JSON parse error, {exc}"))
        return None

    # -- lexer (json-lexer.c) --
    def _stray(self, byte: int) -> None:
        self._token.append(byte)
        raw = bytes(self._token)
        self._token.clear()
        self._state = _RECOVERY
        self._fail(f"JSON parse error, stray '{qemu_text(raw)}'")

    def _emit(self, kind: int) -> None:
        raw = bytes(self._token)
        self._token.clear()
        self._state = _START
        self._token_done(kind, raw)

    def _run(self, pattern: re.Pattern, data: bytes, i: int) -> int:
        """Append the run ``pattern`` matches at ``i`` (at most up to the token size limit); return the new i."""
        room = MAX_TOKEN_SIZE + 1 - len(self._token)
        end = _end_of(pattern, data, i, min(len(data), i + room))
        self._token += data[i:end]
        return end

    def _too_long(self) -> bool:
        if len(self._token) <= MAX_TOKEN_SIZE:
            return False
        self._token.clear()
        self._state = _START
        self._fail("JSON token size limit exceeded")
        return True

    def feed(self, data: bytes) -> list[Message]:
        """Lex, group and parse ``data``; return the messages it completed (values and errors, in order)."""
        i, n = 0, len(data)
        if self._fast and self._state == _START and not self._kinds and not self._token:
            i = self._feed_plain(data)
        token = self._token
        while i < n:
            state = self._state
            if state == _START:
                i = _end_of(_WHITESPACE, data, i)
                if i >= n:
                    break
                c = data[i]
                i += 1
                kind = _STRUCTURAL.get(c)
                if kind is not None:
                    self._token_done(kind, bytes((c,)))
                    continue
                token.append(c)
                if c == 0x22:
                    self._state = _DQ
                elif c == 0x27:
                    self._state = _SQ
                elif c == 0x30:
                    self._state = _ZERO
                elif 0x31 <= c <= 0x39:
                    self._state = _DIGITS
                elif c == 0x2D:
                    self._state = _SIGN
                elif 0x61 <= c <= 0x7A:
                    self._state = _KEYWORD
                else:
                    token.clear()
                    self._stray(c)
            elif state == _RECOVERY:
                i = _end_of(_RECOVERY_SKIP, data, i)
                if i < n:
                    self._state = _START
            elif state in (_DQ, _SQ):
                i = self._run(_DQ_RUN if state == _DQ else _SQ_RUN, data, i)
                if self._too_long() or i >= n:
                    continue
                c = data[i]
                i += 1
                if c == (0x22 if state == _DQ else 0x27):
                    token.append(c)
                    self._emit(STRING)
                elif c == 0x5C:
                    token.append(c)
                    self._state = _DQ_ESC if state == _DQ else _SQ_ESC
                    self._too_long()
                else:
                    self._stray(c)
            elif state in (_DQ_ESC, _SQ_ESC):
                c = data[i]
                i += 1
                if 0x20 <= c <= 0xFD:
                    token.append(c)
                    self._state = _DQ if state == _DQ_ESC else _SQ
                    self._too_long()
                else:
                    self._stray(c)
            else:
                i = self._number_or_keyword(state, data, i)
        return self._drain()

    def _number_or_keyword(self, state: int, data: bytes, i: int) -> int:
        """One step in a number or keyword; returns the new position (unchanged when a token ended before it)."""
        if state in (_DIGITS, _MANTISSA_DIGITS, _EXP_DIGITS):
            i = self._run(_DIGIT_RUN, data, i)
        elif state == _KEYWORD:
            i = self._run(_KEYWORD_RUN, data, i)
        if self._too_long() or i >= len(data):
            return i
        c = data[i]
        digit = 0x30 <= c <= 0x39
        nxt = None
        if state == _ZERO:
            if digit:
                self._stray(c)
                return i + 1
            nxt = _MANTISSA if c == 0x2E else None
            terminal = INTEGER
        elif state == _SIGN:
            nxt = _ZERO if c == 0x30 else _DIGITS if digit else None
            terminal = None
        elif state == _DIGITS:
            nxt = _MANTISSA if c == 0x2E else _EXP_E if c in (0x45, 0x65) else None
            terminal = INTEGER
        elif state == _MANTISSA:
            nxt, terminal = (_MANTISSA_DIGITS if digit else None), None
        elif state == _MANTISSA_DIGITS:
            nxt, terminal = (_EXP_E if c in (0x45, 0x65) else None), FLOAT
        elif state == _EXP_E:
            nxt = _EXP_SIGN if c in (0x2B, 0x2D) else _EXP_DIGITS if digit else None
            terminal = None
        elif state == _EXP_SIGN:
            nxt, terminal = (_EXP_DIGITS if digit else None), None
        elif state == _EXP_DIGITS:
            nxt, terminal = None, FLOAT
        else:  # _KEYWORD
            nxt, terminal = None, KEYWORD
        if nxt is not None:
            self._token.append(c)
            self._state = nxt
            self._too_long()
            return i + 1
        if terminal is None:
            self._stray(c)
            return i + 1
        self._emit(terminal)  # lookahead: c is lexed again from the start state
        return i

    def _drain(self) -> list[Message]:
        out, self._out = self._out, []
        return out


# -- writer (qobject/json-writer.c, compact mode) -------------------------------------------------------------------
_PLAIN = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*\Z')
_SPECIAL = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    short = _SHORT.get(ch)
    if short:
        return short
    cp = ord(ch)
    if 0xD800 <= cp <= 0xDFFF or not _valid_codepoint(cp):
        cp = 0xFFFD  # QEMU cannot hold these; it prints the replacement character
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    return f"\\u{cp:04X}"


def _string(s: str) -> str:
    if _PLAIN.match(s):
        return f'"{s}"'
    return '"' + _SPECIAL.sub(_escape, s) + '"'


def _scalar_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.17g}"
    raise TypeError(f"cannot send a {type(value).__name__} over QMP")


def to_json(value: Any) -> str:
    """``value`` as QEMU writes it on the wire: ", " and ": " separators, ASCII only, ``\\uXXXX`` in capitals.

    Dicts are written in their own order (the machine already orders them as QEMU's QDict would).
    """
    text = _fast_json(value)
    return text if text is not None else _slow_json(value)


#: The C encoder writes what _slow_json writes for dicts, lists, ints, bools, null and plain strings (printable
#: ASCII without quote or backslash); it differs for escaped characters (lowercase \\u, DEL left raw) and floats
#: (Python's shortest repr, not QEMU's "%.17g").  A large reply (a trace of 256 exchanges) is ~10x faster this way.
_C_ENCODER = json.JSONEncoder(ensure_ascii=True, check_circular=False, separators=(", ", ": "))
_FLOAT_TOKEN = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?|-?Infinity|NaN")


def _fast_json(value: Any) -> str | None:
    """The C encoder's text with floats rewritten as QEMU prints them, or None when only the slow path is exact."""
    try:
        text = _C_ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None  # the slow path raises the error with our words
    if "\\" in text or "\x7f" in text:
        return None
    return _qemu_floats(text)


def _qemu_floats(text: str) -> str:
    """``text`` with each float token (Python's repr) rewritten as QEMU prints it ("%.17g").

    Outside string literals only a float holds ".", "e+", "e-", "Infinity" or "NaN", and a number starts after
    " " (": ", ", ") or "["; a position is inside a string when an odd number of quotes precede it (the text has
    no backslash, so every quote delimits a string).  str.find and str.count do the scanning in C.
    """
    anchors = []
    for anchor in (".", "e+", "e-", "Infinity", "NaN"):
        i = text.find(anchor)
        while i >= 0:
            anchors.append(i)
            i = text.find(anchor, i + 1)
    if not anchors:
        return text
    out: list[str] = []
    pos = quotes_pos = quotes = 0
    for i in sorted(anchors):
        if i < pos:
            continue  # part of the float just rewritten ("1.5e+20" has two anchors)
        quotes += text.count('"', quotes_pos, i)
        quotes_pos = i
        if quotes % 2:
            continue  # inside a string
        start = max(text.rfind(" ", 0, i), text.rfind("[", 0, i)) + 1
        m = _FLOAT_TOKEN.match(text, start)
        assert m is not None and m.end() > i, text[start:i + 20]
        out += (text[pos:start], _scalar_json(float(m.group())))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _slow_json(value: Any) -> str:
    out: list[str] = []
    stack: list[list[Any]] = []  # [iterator, is_dict, first]
    while True:
        if isinstance(value, dict):
            if value:
                out.append("{")
                stack.append([iter(value.items()), True, True])
            else:
                out.append("{}")
        elif isinstance(value, (list, tuple)):
            if value:
                out.append("[")
                stack.append([iter(value), False, True])
            else:
                out.append("[]")
        else:
            out.append(_scalar_json(value))
        while stack:
            frame = stack[-1]
            item: Any = next(frame[0], _END)
            if item is _END:
                out.append("}" if frame[1] else "]")
                stack.pop()
                continue
            if not frame[2]:
                out.append(", ")
            frame[2] = False
            if frame[1]:
                key, value = item
                if not isinstance(key, str):
                    raise TypeError(f"QMP object keys are strings, not {type(key).__name__}")
                out.append(_string(key) + ": ")
            else:
                value = item
            break
        else:
            return "".join(out)


_END = object()
