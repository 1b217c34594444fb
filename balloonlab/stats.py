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
    since: tuple[int, int]  #: first QEMU version that reports it

    @property
    def qmp_key(self) -> str:
        return "stat-" + self.key


STATS: tuple[StatInfo, ...] = (
    StatInfo(0, "swap-in", "swap_in", "bytes", "memory swapped in since boot", (2, 0)),
    StatInfo(1, "swap-out", "swap_out", "bytes", "memory swapped out since boot", (2, 0)),
    StatInfo(2, "major-faults", "major_fault", "count", "page faults that needed disk I/O", (2, 0)),
    StatInfo(3, "minor-faults", "minor_fault", "count", "page faults served without disk I/O", (2, 0)),
    StatInfo(4, "free-memory", "unused", "bytes", "memory not used at all (page cache counts as used)", (2, 0)),
    StatInfo(5, "total-memory", "available", "bytes", "memory the guest kernel manages (RAM minus balloon and reserved)", (2, 0)),
    StatInfo(6, "available-memory", "usable", "bytes", "memory available for new work without swapping (MemAvailable)", (2, 10)),
    StatInfo(7, "disk-caches", "disk_caches", "bytes", "page cache that can be reclaimed quickly", (2, 11)),
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
