"""The QMP writer's fast path (the C encoder, floats rewritten as QEMU prints them) writes exactly what the
token-by-token writer writes, for any value; it only exists so that big replies (a trace of 256 exchanges) are
cheap."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from balloonlab.emulator.jsonstream import _fast_json, _slow_json, to_json

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
           | st.sampled_from(["avail. descs.", "a: 0.1, b", "[1e+16]", "NaN", "-Infinity", "x\x7fy", "é"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(values)
def test_fast_path_writes_what_the_slow_path_writes(value):
    fast = _fast_json(value)
    assert fast is None or fast == _slow_json(value)
    assert to_json(value) == _slow_json(value)


def test_fast_path_is_taken_for_plain_replies_and_floats():
    value = {"time": 1700000001.002, "small": 0.1, "big": 1e16, "neg": -2.5e-07, "inf": math.inf,
             "list": [0.5, 3, "avail. descs.: 0.1"], "ok": True, "none": None}
    assert _fast_json(value) == _slow_json(value)
    assert '"time": 1700000001.0020001' in to_json(value) and '"small": 0.10000000000000001' in to_json(value)
    assert _fast_json({"s": "caf\u00e9"}) is None  # escapes: the slow path's capitals


# -- the reader's fast path (plain objects through Python's C scanner) -------------------------------------------
from balloonlab.emulator.jsonstream import JSONMessageReader  # noqa: E402

#: Pieces a client may send: plain requests and every quirk where Python's JSON and QEMU's parser part ways.
FRAGMENTS = [
    '{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/balloon0", "property": "guest-stats"}}',
    '{"execute":"query-status","id":{"b":1,"a":[1,2.5,-0,-0.0,1e3,1E-2,true,false,null]}}',
    '{"a": 1, "a": 2}', '{"n": NaN}', '{"n": Infinity}', '{"n": -Infinity}', "{'execute': 'stop'}",
    '{"n": 01}', '{"n": 18446744073709551615}', '{"n": 18446744073709551616}', '{"n": -9223372036854775809}',
    '{"n": 123456789012345678901234567890}', '{"s": "tab\there"}', '{"s": "del\x7f"}', '{"s": "\\u00e9"}',
    '{"s": "caf\u00e9"}', '{"k": truex}', '{"x": [}', "{}", "[]", "[1, 2]", "1", '"s"', "}", "]", "{", "[",
    '{"a": {"b": {"c": [[[{}]]]}}}', " ", "\r\n", "\t", "%", "\xff", '{"a":1}}', '{"a" 1}', '{"a":1,}',
    '{"e": 1.5e+300}', '{"e": 1e999}', "{" * 40 + "}" * 40, '{"d": ' + "[" * 1030 + "]" * 1030 + "}",
]


def _messages(data: bytes, cuts: list[int], fast: bool) -> str:
    reader = JSONMessageReader(fast=fast)
    out, start = [], 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    return repr(out)  # repr tells 1 from 1.0 and keeps the order of keys


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join).map(lambda t: t.encode("utf-8")),
       st.lists(st.integers(min_value=0, max_value=20_000), max_size=4))
def test_the_fast_reader_reads_every_stream_as_the_token_reader_does(data, cuts):
    cuts = [c % (len(data) + 1) for c in cuts]
    assert _messages(data, cuts, fast=True) == _messages(data, cuts, fast=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=3))
def test_the_fast_reader_reads_any_bytes_as_the_token_reader_does(data, cuts):
    cuts = [c % (len(data) + 1) for c in cuts]
    assert _messages(data, cuts, fast=True) == _messages(data, cuts, fast=False)


def test_the_fast_reader_takes_plain_requests_without_the_token_reader():
    reader = JSONMessageReader()
    request = FRAGMENTS[0].encode()
    assert reader._feed_plain(request + b"\r\n" + request) == len(request) * 2 + 2
    assert reader._feed_plain(b'{"a": 1, "a": 2}') == 0  # a duplicate key: QEMU's error, from the token reader
    assert reader._feed_plain(b'{"a": 1} {"b": ') == len(b'{"a": 1} ')  # a cut message: the token reader goes on
