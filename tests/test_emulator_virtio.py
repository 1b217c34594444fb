"""The stats virtqueue: entry encoding, QEMU's decoding rules, who holds the buffer, the bounded trace."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.virtio import (
    ENTRY_SIZE,
    TRACE_LENGTH,
    BalloonConfig,
    StatsVirtqueue,
    decode_stats,
    encode_stats,
)


def test_entry_is_ten_bytes_little_endian():
    data = encode_stats([(4, 0x0102030405060708)])
    assert ENTRY_SIZE == 10
    assert data == bytes([4, 0, 8, 7, 6, 5, 4, 3, 2, 1])


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1)), max_size=20))
def test_encode_decode_round_trip(entries):
    decoded = decode_stats(encode_stats(entries), 16)
    assert [(t, v) for t, v, _ in decoded] == entries
    assert [ign for _, _, ign in decoded] == [t >= 16 for t, _ in entries]


def test_unknown_tags_ignored_per_version_and_trailing_partial_entry_dropped():
    data = encode_stats([(4, 100), (10, 1), (15, 2), (99, 3)]) + b"\x05\x00\x01"
    old = decode_stats(data, 10)  # QEMU <= 9.1
    new = decode_stats(data, 16)  # QEMU >= 9.2
    assert old == [(4, 100, False), (10, 1, True), (15, 2, True), (99, 3, True)]
    assert new == [(4, 100, False), (10, 1, False), (15, 2, False), (99, 3, True)]


def test_config_space_is_two_le32_in_pages():
    assert BalloonConfig(num_pages=65536, actual=256).to_bytes() == struct.pack("<IIII", 65536, 256, 0, 0)
    assert BalloonConfig(num_pages=65536, actual=256, size=8).to_bytes() == struct.pack("<II", 65536, 256)


def test_queue_runs_in_reverse_and_is_traced():
    clock = Clock("virtual")
    q = StatsVirtqueue(clock, 10)
    reports, requests = [], []
    q.on_report = reports.append
    q.on_request = lambda: requests.append(q.holder)
    assert q.holder == "none" and not q.device_return()  # nothing parked yet
    q.guest_add(encode_stats([(5, 4096), (12, 7)]))
    assert q.holder == "device" and len(reports) == 1
    assert q.device_return() and requests == ["guest"]
    assert not q.device_return()  # the guest has it now
    trace = q.trace()
    assert trace["next"] == 2 and trace["holder"] == "guest"
    report, request = trace["exchanges"]
    assert report["kind"] == "report" and report["holder"] == "device"
    assert report["bytes"] == encode_stats([(5, 4096), (12, 7)]).hex()
    assert report["entries"] == [{"tag": 5, "name": "total-memory", "value": 4096, "ignored": False},
                                 {"tag": 12, "name": "async-scans", "value": 7, "ignored": True}]
    assert request == {**request, "kind": "request", "holder": "guest", "bytes": "", "entries": []}
    assert q.trace(since=1)["exchanges"] == [request]


def test_trace_is_a_bounded_ring():
    q = StatsVirtqueue(Clock("virtual"), 16)
    for _ in range(TRACE_LENGTH):
        q.guest_add(b"")
        q.device_return()
    trace = q.trace()
    assert trace["next"] == 2 * TRACE_LENGTH
    assert len(trace["exchanges"]) == TRACE_LENGTH
    assert trace["exchanges"][0]["seq"] == TRACE_LENGTH
