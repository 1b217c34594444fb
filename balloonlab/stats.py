"""What each virtio-balloon statistic is, as one table that everything else reads.

The table joins the layers that name a statistic differently: the virtio tag the guest writes into the stats
virtqueue, the QMP key QEMU reports (``stat-`` + key), libvirt's ``virsh dommemstat`` name, the unit, what it
means, and the first QEMU version that reports it.  The emulator encodes and decodes with it, the client parses
with it, the widgets label with it: a stat is named in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

#: QEMU reports an unset statistic as uint64 -1 on the wire (its docs say "-1").
UNSET = 2**64 - 1


@dataclass(frozen=True)
class StatInfo:
    """One statistic across the layers that name it."""

    tag: int  #: VIRTIO_BALLOON_S_* tag in the stats virtqueue entry
    key: str  #: QMP name without the ``stat-`` prefix
    libvirt: str  #: ``virsh dommemstat`` name
    unit: str  #: ``"bytes"`` or ``"count"`` (QMP units; libvirt shows bytes in KiB)
    meaning: str  #: what a Linux guest puts there
    #: First QEMU version that reports it.  Tags 0-5: QEMU 1.5 (2013), whose QOM ``guest-stats`` property and
    #: docs/virtio-balloon-stats.txt replaced the guest stats that earlier QEMUs had disabled.
    since: tuple[int, int]

    @property
    def qmp_key(self) -> str:
        return "stat-" + self.key


STATS: tuple[StatInfo, ...] = (
    StatInfo(0, "swap-in", "swap_in", "bytes", "memory swapped in since boot", (1, 5)),
    StatInfo(1, "swap-out", "swap_out", "bytes", "memory swapped out since boot", (1, 5)),
    StatInfo(2, "major-faults", "major_fault", "count", "page faults that needed disk I/O", (1, 5)),
    StatInfo(3, "minor-faults", "minor_fault", "count", "page faults served without disk I/O", (1, 5)),
    StatInfo(4, "free-memory", "unused", "bytes", "memory not used at all (page cache counts as used)", (1, 5)),
    StatInfo(5, "total-memory", "available", "bytes",
             "memory the guest kernel manages (RAM minus balloon and reserved)", (1, 5)),
    StatInfo(6, "available-memory", "usable", "bytes",
             "memory available for new work without swapping (MemAvailable)", (2, 10)),
    StatInfo(7, "disk-caches", "disk_caches", "bytes",
             "file pages in memory (NR_FILE_PAGES): page cache incl. tmpfs/shmem and dirty pages", (2, 11)),
    StatInfo(8, "htlb-pgalloc", "hugetlb_pgalloc", "count", "successful huge page allocations", (3, 0)),
    StatInfo(9, "htlb-pgfail", "hugetlb_pgfail", "count", "failed huge page allocations", (3, 0)),
    StatInfo(10, "oom-kills", "oom_kills", "count", "processes killed by the OOM killer", (9, 2)),
    StatInfo(11, "alloc-stalls", "alloc_stalls", "count", "allocations that stalled for reclaim", (9, 2)),
    StatInfo(12, "async-scans", "async_scans", "bytes", "memory scanned by background reclaim (kswapd)", (9, 2)),
    StatInfo(13, "direct-scans", "direct_scans", "bytes", "memory scanned by direct reclaim", (9, 2)),
    StatInfo(14, "async-reclaims", "async_reclaims", "bytes", "memory reclaimed by background reclaim", (9, 2)),
    StatInfo(15, "direct-reclaims", "direct_reclaims", "bytes", "memory reclaimed by direct reclaim", (9, 2)),
)

BY_TAG: dict[int, StatInfo] = {s.tag: s for s in STATS}
BY_KEY: dict[str, StatInfo] = {s.key: s for s in STATS}

# The order QEMU puts the keys on the wire (from its QDict hash; observed on 7.2 and 10.0).  Clients must not
# rely on it, but a faithful emulator reproduces it.
WIRE_ORDER_10 = ("htlb-pgalloc", "swap-out", "available-memory", "htlb-pgfail", "free-memory",
                 "minor-faults", "major-faults", "total-memory", "swap-in", "disk-caches")
WIRE_ORDER_16 = ("htlb-pgalloc", "swap-out", "alloc-stalls", "available-memory", "direct-reclaims",
                 "direct-scans", "htlb-pgfail", "free-memory", "minor-faults", "major-faults", "total-memory",
                 "oom-kills", "async-reclaims", "swap-in", "async-scans", "disk-caches")


def stats_for_version(version: tuple[int, int]) -> tuple[StatInfo, ...]:
    """The statistics a QEMU of this version reports, in its wire order."""
    order = WIRE_ORDER_16 if version >= (9, 2) else WIRE_ORDER_10
    return tuple(BY_KEY[k] for k in order)


# ---------------------------------------------------------------------------------------------------------------
# GuestStats: one ``guest-stats`` answer, as a read-only mapping.
# ---------------------------------------------------------------------------------------------------------------

import datetime as _dt  # noqa: E402  (GuestStats' own imports, kept with it)
import html as _html  # noqa: E402
from collections.abc import Iterator as _Iterator, Mapping as _Mapping  # noqa: E402
from typing import Any as _Any  # noqa: E402

from .units import format_size as _format_size  # noqa: E402


@dataclass(frozen=True)
class UsedMemory:
    """One way of computing "used memory" from the guest's stats, and who computes it that way."""

    name: str  #: short code, e.g. ``"total-available"``
    formula: str  #: in QMP names
    needs: tuple[str, ...]  #: stat keys it needs
    counts_cache_as_used: bool
    who: str  #: which tool computes it this way (from that tool's sources)


#: The three definitions side by side.  ``total-available`` is the one balloonlab recommends: it is what the
#: guest kernel itself estimates, and it does not call reclaimable page cache "used".
USED_MEMORY: tuple[UsedMemory, ...] = (
    UsedMemory(
        "total-free", "total-memory - free-memory", ("total-memory", "free-memory"), True,
        "OpenStack Ceilometer's libvirt inspector when the guest reports no 'usable' (libvirt 'available - "
        "unused'); counts page cache as used, so an idle guest with a warm cache looks full"),
    UsedMemory(
        "total-available", "total-memory - available-memory", ("total-memory", "available-memory"), False,
        "procps-ng 4 `free` / libproc2 'used' (MemTotal - MemAvailable); Ceilometer's libvirt inspector when "
        "'usable' is reported (libvirt 'available - usable')"),
    UsedMemory(
        "total-free-caches", "total-memory - free-memory - disk-caches",
        ("total-memory", "free-memory", "disk-caches"), False,
        "close to procps-ng 3.3 `free` 'used' (total - free - buffers - cache); disk-caches is the guest's "
        "NR_FILE_PAGES (page cache incl. buffers), which does not include reclaimable slab"),
)
USED_MEMORY_BY_NAME: dict[str, UsedMemory] = {u.name: u for u in USED_MEMORY}


def _tag_order(key: str) -> int:
    info = BY_KEY.get(key)
    return info.tag if info is not None else 1000


def _decode(value: _Any) -> int | None:
    if value is None or value == UNSET or value == -1:
        return None
    return int(value)


def format_stat(key: str, value: int | None) -> str:
    """A stat's value for people, in its unit: ``"438.5 MiB"`` for bytes, ``"1,234"`` for counts, ``"unset"``."""
    if value is None:
        return "unset"
    info = BY_KEY.get(key)
    if info is not None and info.unit == "bytes":
        return _format_size(value)
    return f"{value:,}"


class GuestStats(_Mapping):
    """One ``qom-get ... guest-stats`` answer: ``stats["free-memory"] -> int | None``.

    Keys are QEMU's names without ``stat-`` and only those this QEMU reported (10 on QEMU < 9.2, 16 from 9.2), in
    tag order; ``None`` means unset (``18446744073709551615`` on the wire).  ``.raw`` is the exact dict QEMU sent.
    """

    __slots__ = ("_raw", "_values", "_last_update")

    def __init__(self, raw: dict) -> None:
        if not isinstance(raw, dict) or not isinstance(raw.get("stats"), dict):
            raise ValueError(f"not a guest-stats answer: {raw!r}")
        self._raw = raw
        wire = raw["stats"]
        values = {(k[5:] if k.startswith("stat-") else k): _decode(v) for k, v in wire.items()}
        self._values: dict[str, int | None] = {k: values[k] for k in sorted(values, key=_tag_order)}
        lu = raw.get("last-update") or 0
        self._last_update = (
            _dt.datetime.fromtimestamp(lu, _dt.timezone.utc) if lu else None)

    # Mapping protocol --------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> int | None:
        if key.startswith("stat-"):
            key = key[5:]
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key.startswith("stat-"):
            key = key[5:]
        return key in self._values

    def __iter__(self) -> _Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GuestStats):
            return self._raw == other._raw
        return _Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    # What people ask ---------------------------------------------------------------------------------------------
    @property
    def raw(self) -> dict:
        """The dict exactly as QEMU sent it (``{"stats": {"stat-...": ...}, "last-update": N}``)."""
        return self._raw

    @property
    def last_update(self) -> _dt.datetime | None:
        """When the guest last answered (host wall clock, UTC, whole seconds); ``None`` for never (0)."""
        return self._last_update

    @property
    def last_update_seconds(self) -> int:
        """``last-update`` as on the wire (0 = never)."""
        return int(self._raw.get("last-update") or 0)

    @property
    def unset(self) -> tuple[str, ...]:
        """Keys whose value is unset."""
        return tuple(k for k, v in self._values.items() if v is None)

    @property
    def filled(self) -> tuple[str, ...]:
        """Keys the guest filled in."""
        return tuple(k for k, v in self._values.items() if v is not None)

    @property
    def reported(self) -> bool:
        """True once the guest has ever answered (``last-update`` non-zero)."""
        return self._last_update is not None

    def get_bytes(self, key: str) -> int | None:
        """A byte-valued stat, refusing counts, so that ``major-faults`` is never plotted as memory."""
        info = BY_KEY.get(key[5:] if key.startswith("stat-") else key)
        if info is None or info.unit != "bytes":
            raise KeyError(f"{key!r} is not a byte-valued stat")
        return self.get(info.key)

    def used_memory(self, definition: str = "total-available") -> int | None:
        """Used memory by one of :data:`USED_MEMORY`'s definitions; ``None`` if a needed stat is unset."""
        try:
            d = USED_MEMORY_BY_NAME[definition]
        except KeyError:
            raise ValueError(
                f"unknown definition {definition!r}; choose one of {', '.join(USED_MEMORY_BY_NAME)}") from None
        values = [self.get(k) for k in d.needs]
        if any(v is None for v in values):
            return None
        total, *rest = (v for v in values if v is not None)
        return total - sum(rest)

    def used_memory_table(self) -> list[dict]:
        """All definitions side by side: name, formula, bytes (or None), who uses it."""
        return [{"definition": d.name, "formula": d.formula, "bytes": self.used_memory(d.name),
                 "counts_cache_as_used": d.counts_cache_as_used, "who": d.who} for d in USED_MEMORY]

    def to_dict(self) -> dict[str, int | None]:
        return dict(self._values)

    # Display -----------------------------------------------------------------------------------------------------
    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for key, value in self._values.items():
            info = BY_KEY.get(key)
            shown = "unset" if value is None else str(value)
            if value is None:
                wire = self._raw["stats"].get("stat-" + key, self._raw["stats"].get(key))
                shown = f"unset ({wire})"
            rows.append((key, shown, info.unit if info else "", format_stat(key, value), info.meaning if info else ""))
        return rows

    def _when(self) -> str:
        if self._last_update is None:
            return "last-update 0: the guest has never reported"
        return f"last-update {self.last_update_seconds} ({self._last_update.isoformat()})"

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v!r}" for k, v in self._values.items())
        return f"GuestStats({{{inner}}}, last_update={self._last_update!r})"

    def _repr_pretty_(self, p: _Any, cycle: bool) -> None:
        if cycle:
            p.text("GuestStats(...)")
            return
        rows = [("stat", "value", "unit", "human", "meaning"), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = []
        for r in rows:
            lines.append("  ".join(r[i].ljust(widths[i]) if i != 1 else r[i].rjust(widths[i]) for i in range(4))
                         + "  " + r[4])
        lines.append(self._when())
        p.text("\n".join(line.rstrip() for line in lines))

    def _repr_html_(self) -> str:
        # Every cell says its alignment: JupyterLab's and nbconvert's table styles right-align all cells, which
        # pushes names and meanings away from their column heads.  Text left, numbers right.
        e = _html.escape
        left, right = " style='text-align:left'", " style='text-align:right'"
        body = "".join(
            f"<tr><td{left}><code>{e(k)}</code></td><td{right}>{e(v)}</td><td{left}>{e(u)}</td>"
            f"<td{right}>{e(h)}</td><td{left}>{e(m)}</td></tr>"
            for k, v, u, h, m in self._rows())
        return (f"<table class='balloonlab-stats'><thead><tr><th{left}>stat</th><th{right}>value</th>"
                f"<th{left}>unit</th><th{right}>human</th><th{left}>meaning</th></tr></thead><tbody>{body}</tbody>"
                f"</table><p><small>{e(self._when())}</small></p>")
