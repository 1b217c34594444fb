"""History: compact, bounded, exact; a day at 1 s fits in well under 10 MB."""

from __future__ import annotations

import csv
import io
import random
import sys

import pytest

from balloonlab.client.history import CHUNK, History
from balloonlab.stats import UNSET, WIRE_ORDER_16, GuestStats

T0 = 1_764_000_000.0


_ORDER = tuple("stat-" + k for k in WIRE_ORDER_16)


def report(i: int, r: int, free: int) -> GuestStats:
    """A plausible 16-stat report: memory figures wander by pages, counters grow, one stat unset."""
    values = {
        "swap-in": 0, "swap-out": (r % 4) * 4096 * i, "major-faults": i // 7,
        "minor-faults": 800 + 37 * i + r % 10, "free-memory": free,
        "total-memory": 487280640, "available-memory": free - 5 * 4096 * (r % 100),
        "disk-caches": 2269184 + 4096 * (r % 1000), "htlb-pgalloc": 0, "htlb-pgfail": 0,
        "oom-kills": 0, "alloc-stalls": i // 1000, "async-scans": 4096 * (i // 50), "direct-scans": 0,
        "async-reclaims": 4096 * (i // 60), "direct-reclaims": UNSET,
    }
    return GuestStats({"stats": {k: values[k[5:]] for k in _ORDER}, "last-update": int(T0) + i})


def fill(h: History, n: int, seed: int = 1) -> list[GuestStats]:
    """Add ``n`` samples (pseudo-random but reproducible); returns the first and last three."""
    rng = random.Random(seed)
    noise = [rng.getrandbits(32) for _ in range(4096)]
    free = 459821056
    kept = []
    for i in range(n):
        r = noise[i % 4096] ^ i
        free = max(0, free + 4096 * (r % 513 - 256))
        s = report(i, r, free)
        h.add(T0 + i + (r % 100) / 1000, s, interval=1, actual=512 << 20)
        if i >= n - 3 or i < 3:
            kept.append(s)
    return kept


def test_round_trip_is_exact_including_unset_and_huge_values():
    h = History()
    s1 = GuestStats({"stats": {"stat-free-memory": 123, "stat-total-memory": UNSET,
                               "stat-swap-in": 2**64 - 2}, "last-update": 0})
    h.add(T0, s1, interval=None, actual=1 << 40)
    assert len(h) == 1
    row = h.rows()[0]
    assert row["free-memory"] == 123
    assert row["total-memory"] is None
    assert row["swap-in"] == 2**64 - 2
    assert row["last-update"] is None and row["interval"] is None and row["actual"] == 1 << 40
    assert row["time"] == pytest.approx(T0)
    assert h.stat_keys == ("swap-in", "free-memory", "total-memory")


def test_values_survive_sealing_into_compressed_chunks():
    h = History()
    kept = fill(h, CHUNK * 2 + 5)
    assert len(h) == CHUNK * 2 + 5
    rows = h.rows()
    for got, want in ((rows[0], kept[0]), (rows[-1], kept[-1])):
        for key in want:
            assert got[key] == want[key], key
        assert got["last-update"] == want.last_update_seconds
    assert h.column("time") == sorted(h.column("time"))


def test_bounded_by_count_dropping_whole_old_chunks():
    h = History(max_samples=CHUNK * 3)
    fill(h, CHUNK * 5)
    assert CHUNK * 2 <= len(h) <= CHUNK * 3
    assert h.column("last-update")[-1] == int(T0) + CHUNK * 5 - 1


def deep_size(h: History) -> int:
    """Bytes held by the sample storage, summed with sys.getsizeof over every container and buffer."""
    total = sys.getsizeof(h._open) + sys.getsizeof(h._sealed)
    total += sum(sys.getsizeof(k) + sys.getsizeof(a) for k, a in h._open.items())
    for n, blobs in h._sealed:
        total += sys.getsizeof((n, blobs)) + sys.getsizeof(blobs) + sum(sys.getsizeof(b) for b in blobs.values())
    return total


def test_a_day_at_one_second_fits_in_10_mb():
    h = History()
    fill(h, 86_400)
    assert len(h) == 86_400
    held = deep_size(h)
    assert held < 10 * 1024 * 1024, f"{held / 2**20:.1f} MiB for 86400 samples"
    assert h.nbytes <= held


def test_events_are_bounded_and_kept_in_order():
    h = History(max_events=3)
    for n in range(5):
        h.add_event({"timestamp": {"seconds": 100 + n, "microseconds": 0}, "event": "BALLOON_CHANGE",
                     "data": {"actual": n}})
    assert [e["data"]["actual"] for e in h.events] == [2, 3, 4]


def test_to_csv_file_and_path(tmp_path):
    h = History()
    fill(h, 10)
    buf = io.StringIO()
    h.to_csv(buf)
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0][:4] == ["time", "last-update", "interval", "actual"]
    assert len(rows) == 11
    assert rows[1][0].endswith("+00:00")
    assert rows[1][rows[0].index("direct-reclaims")] == ""  # unset -> empty cell
    path = tmp_path / "h.csv"
    h.to_csv(path)
    assert path.read_text() == buf.getvalue().replace("\r\n", "\n") or path.read_text() == buf.getvalue()


def test_to_dataframe():
    import pandas as pd

    h = History()
    kept = fill(h, 20)
    df = h.to_dataframe()
    assert len(df) == 20
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    assert df["free-memory"].iloc[-1] == kept[-1]["free-memory"]
    assert df["direct-reclaims"].isna().all()
    assert str(df["free-memory"].dtype) == "UInt64"


def test_enabled_notifies_the_lab():
    h = History()
    calls = []
    h.on_enabled_change = lambda: calls.append(h.enabled)
    h.enabled = True
    h.enabled = True
    h.enabled = False
    assert calls == [True, False]


def test_latest_is_the_newest_row_open_or_sealed():
    h = History()
    assert h.latest() is None
    kept = fill(h, CHUNK)  # exactly one sealed chunk, nothing open
    assert h.latest() == h.rows()[-1]
    assert h.latest()["free-memory"] == kept[-1]["free-memory"]
    fill(h, 2)
    assert h.latest() == h.rows()[-1]


def test_columns_added_at_once_read_back_as_samples_added_one_by_one():
    """add_columns (a replayed virtual-clock advance) stores exactly what add() stores, across chunk seals."""
    one, many = History(), History()
    stats = fill(one, CHUNK + 300)
    rows = one.rows()
    del stats
    # the same samples as columns, in two slices that cross a seal; stats as QEMU's uint64 (unset = 2**64 - 1)
    for part in (rows[:CHUNK - 7], rows[CHUNK - 7:]):
        many.add_columns([round(r["time"] * 1000) for r in part], [r["last-update"] or 0 for r in part],
                         {k: [UNSET if r[k] is None else r[k] for r in part] for k in one.stat_keys},
                         interval=1, actual=512 << 20)
    assert len(many) == len(one) and many.stat_keys == one.stat_keys
    assert many.columns_dict() == one.columns_dict()
    many.add_columns([], [], {})
    assert len(many) == len(one)
