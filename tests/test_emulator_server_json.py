"""The streaming JSON reader and the writer of the QMP server (balloonlab/emulator/jsonstream.py) on their own:
types as QEMU keeps them, any slicing of the input, round trips, and what the standard library makes of the
output.  (The error texts are checked over the socket, and against a real QEMU, in the other server tests.)"""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from balloonlab.emulator.jsonstream import JSONMessageReader, Message, qemu_text, to_json
from tests.fixtures.emulator import random_cases


def read_all(data: bytes) -> list[Message]:
    return JSONMessageReader().feed(data)


def test_numbers_keep_qemus_types():
    values = read_all(b'[2, 2.0, 9223372036854775807, 9223372036854775808, 18446744073709551615, '
                      b'18446744073709551616, -9223372036854775808, -9223372036854775809, 1e2, -0]')[0].value
    assert [type(v) for v in values] == [int, float, int, int, int, float, int, float, float, int]
    assert values[3] == 1 << 63 and values[5] == float(1 << 64) and values[7] == -float(1 << 63)


def test_quoting_and_keywords():
    assert read_all(b"{'a': \"it's\", \"b\": 'say \"hi\"', 'c': [true, false, null]}") == [
        Message({"a": "it's", "b": 'say "hi"', "c": [True, False, None]})]


def test_any_slicing_of_the_input_gives_the_same_messages():
    stream = b"".join(random_cases(seed=7, count=200)) + b"\x01\n"
    whole = read_all(stream)
    rng = random.Random(3)
    reader, sliced, i = JSONMessageReader(), [], 0
    while i < len(stream):
        step = rng.randint(1, 9)
        sliced += reader.feed(stream[i:i + step])
        i += step
    assert sliced == whole and len(whole) > 100


def test_deepest_messages_need_no_recursion():
    depth = 1024
    value = read_all(b"[" * depth + b"]" * depth)[0].value
    assert to_json(value) == "[" * (depth - 1) + "[]" + "]" * (depth - 1)
    very_deep: list = []
    for _ in range(20000):
        very_deep = [very_deep]
    assert to_json(very_deep).count("[") == 20001


def test_writer_escapes_as_qemu():
    assert to_json("é\x7f\x00\ud83d\U0001F600\ufdd0\"\\/\n") == (
        '"\\u00E9\\u007F\\u0000\\uFFFD\\uD83D\\uDE00\\uFFFD\\"\\\\/\\n"')
    assert to_json({"a": [1, 2.5, None, True], "b": {}}) == '{"a": [1, 2.5, null, true], "b": {}}'
    assert to_json(float("inf")) == "inf" and to_json(1e-7) == "9.9999999999999995e-08"


def test_error_texts_render_bytes_as_qemu_prints_them():
    assert qemu_text(b"ab\0cd") == "ab"
    assert qemu_text(b"\xc0\x80x") == "\x00x"
    assert qemu_text(b"\xe2\x82A\xff\xef\xbf\xbe") == "\ufffdA\ufffd\ufffd"
    assert qemu_text(b"\xe0\x80\x80") == "\ufffd"  # one overlong sequence, one replacement


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet="ab\u00e9\u20ac\U0001F600 \"\\\n", max_size=6), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_what_the_writer_writes_reads_back_and_is_standard_json(value):
    text = to_json(value)
    assert text.isascii() and "\n" not in text
    messages = read_all(text.encode() + b" ")  # the space ends a bare number
    assert len(messages) == 1 and messages[0].error is None
    assert _normalise(messages[0].value) == _normalise(value)
    assert _normalise(json.loads(text)) == _normalise(value)


def _normalise(value):
    """Numbers compared by value (QEMU writes 2.0 as 2); noncharacters and surrogates as QEMU prints them."""
    if isinstance(value, dict):
        return {_normalise(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        return "".join("\ufffd" if _bad(ch) else ch for ch in value)
    return value


def _bad(ch: str) -> bool:
    cp = ord(ch)
    return 0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE
