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
