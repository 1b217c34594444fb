"""GuestStats and the stat table: what a guest-stats answer means, shown and computed."""

from __future__ import annotations

import datetime as dt

import pytest
from IPython.lib.pretty import pretty

from balloonlab.stats import (BY_KEY, STATS, UNSET, USED_MEMORY, WIRE_ORDER_10, WIRE_ORDER_16, GuestStats,
                              stats_for_version)

# What QEMU 7.2 answered for a 512 MiB Linux 6.1 guest (spec A), disk-caches as observed.
LINUX_72 = {
    "stats": {"stat-htlb-pgalloc": 0, "stat-swap-out": 0, "stat-available-memory": 462884864,
              "stat-htlb-pgfail": 0, "stat-free-memory": 463187968, "stat-minor-faults": 812,
              "stat-major-faults": 0, "stat-total-memory": 492847104, "stat-swap-in": 0,
              "stat-disk-caches": 2269184},
    "last-update": 1764130000,
}
NEVER_72 = {"stats": {"stat-" + k: UNSET for k in WIRE_ORDER_10}, "last-update": 0}
# QEMU 10.0 with a 6.1 guest: the six newer stats stay unset.
LINUX_10_OLD_GUEST = {
    "stats": {"stat-" + k: (LINUX_72["stats"].get("stat-" + k, UNSET)) for k in WIRE_ORDER_16},
    "last-update": 1764130000,
}


def test_table_is_consistent():
    assert sorted(s.tag for s in STATS) == list(range(16))
    assert set(WIRE_ORDER_16) == set(BY_KEY)
    assert set(WIRE_ORDER_10) == {s.key for s in STATS if s.tag < 10}
    assert [s.key for s in stats_for_version((7, 2))] == list(WIRE_ORDER_10)
    assert len(stats_for_version((10, 0))) == 16


def test_mapping_keys_values_and_order():
    s = GuestStats(LINUX_72)
    assert len(s) == 10
    assert list(s) == [st.key for st in STATS if st.tag < 10]  # tag order, not wire order
    assert s["free-memory"] == 463187968
    assert s["stat-free-memory"] == 463187968  # the wire spelling works too
    assert s.get("oom-kills") is None and "oom-kills" not in s  # not reported by this QEMU at all
    assert s.raw is LINUX_72
    assert s.unset == ()
    assert s.reported
    assert s.last_update == dt.datetime.fromtimestamp(1764130000, dt.timezone.utc)
    assert s.last_update.tzinfo is not None
    with pytest.raises(TypeError):
        s["free-memory"] = 1  # type: ignore[index]
    with pytest.raises(KeyError):
        s["nope"]


def test_unset_and_never_reported():
    s = GuestStats(NEVER_72)
    assert s.last_update is None and not s.reported
    assert set(s.unset) == set(WIRE_ORDER_10)
    assert all(v is None for v in s.values())
    assert s.used_memory() is None


def test_newer_stats_unset_on_old_guest():
    s = GuestStats(LINUX_10_OLD_GUEST)
    assert len(s) == 16
    assert set(s.unset) == {"oom-kills", "alloc-stalls", "async-scans", "direct-scans", "async-reclaims",
                            "direct-reclaims"}
    assert s["total-memory"] == 492847104


def test_used_memory_definitions_side_by_side():
    s = GuestStats(LINUX_72)
    total, free, avail, caches = 492847104, 463187968, 462884864, 2269184
    assert s.used_memory("total-free") == total - free
    assert s.used_memory("total-available") == total - avail
    assert s.used_memory("total-free-caches") == total - free - caches
    assert s.used_memory() == total - avail
    table = s.used_memory_table()
    assert [r["definition"] for r in table] == [u.name for u in USED_MEMORY]
    assert all(r["who"] for r in table)
    with pytest.raises(ValueError, match="total-available"):
        s.used_memory("bogus")


def test_get_bytes_refuses_counts():
    s = GuestStats(LINUX_72)
    assert s.get_bytes("disk-caches") == 2269184
    with pytest.raises(KeyError):
        s.get_bytes("minor-faults")


def test_equality_follows_the_wire():
    assert GuestStats(LINUX_72) == GuestStats(dict(LINUX_72))
    assert GuestStats(LINUX_72) != GuestStats(NEVER_72)


def test_html_repr_is_a_table_with_units_and_unset_wire_value():
    html = GuestStats(dict(LINUX_72, stats=dict(LINUX_72["stats"], **{"stat-disk-caches": UNSET})))._repr_html_()
    assert html.count("<tr>") == 11  # header + 10 stats
    assert "unset (18446744073709551615)" in html
    assert "441.7 MiB" in html  # free-memory in human form
    assert "MemAvailable" in html  # the meaning column


def test_pretty_repr_is_aligned():
    text = pretty(GuestStats(LINUX_72))
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["stat", "value", "unit", "human"]
    # every stat row's unit column starts at the same offset
    unit_cols = {line.index(" bytes ") if " bytes " in line else line.index(" count ") for line in lines[1:11]}
    assert len(unit_cols) == 1
    assert "last-update 1764130000" in lines[-1]
    assert "never reported" in pretty(GuestStats(NEVER_72))


@pytest.mark.parametrize("bad", [None, {}, {"stats": []}, "stats"])
def test_refuses_what_is_not_a_guest_stats_answer(bad):
    with pytest.raises(ValueError):
        GuestStats(bad)  # type: ignore[arg-type]


def test_html_repr_aligns_text_left_and_numbers_right_in_every_cell():
    # JupyterLab and nbconvert right-align table cells unless a cell says otherwise.
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str | None]] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                style = dict(attrs).get("style") or ""
                self.rows[-1].append(style.replace(" ", "").split("text-align:")[1] if "text-align:" in style
                                     else None)

    parser = Cells()
    parser.feed(GuestStats(LINUX_72)._repr_html_())
    assert len(parser.rows) == 11
    for row in parser.rows:  # stat, value, unit, human, meaning
        assert row == ["left", "right", "left", "right", "left"]
