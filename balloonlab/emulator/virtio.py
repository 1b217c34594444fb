"""The virtio side of the balloon: feature bits, config space, and the stats virtqueue that runs "in reverse".

Most virtqueues carry requests from the driver to the device.  The balloon's stats queue works the other way
round: the guest driver parks one buffer, already filled with a report, in the queue; the device keeps it; when
the device wants fresh numbers it hands the buffer back ("used"), which is the request; the driver refills it
with 10-byte little-endian entries ``{le16 tag; le64 val}`` and adds it again, which is the report.

:class:`StatsVirtqueue` models exactly that buffer and who holds it, and records every exchange in a bounded
trace (``x-balloonlab-trace``).  :func:`decode_stats` decodes a report the way QEMU does.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..stats import BY_TAG

VIRTIO_ID_BALLOON = 5
PAGE_SHIFT = 12  #: VIRTIO_BALLOON_PFN_SHIFT: config space counts 4 KiB pages
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRY = struct.Struct("<HQ")  #: one stats entry: le16 tag, le64 value (10 bytes, packed)
ENTRY_SIZE = ENTRY.size

#: Balloon feature bits (virtio spec, device-types/balloon).
FEATURES = {
    "VIRTIO_BALLOON_F_MUST_TELL_HOST": 0,
    "VIRTIO_BALLOON_F_STATS_VQ": 1,
    "VIRTIO_BALLOON_F_DEFLATE_ON_OOM": 2,
    "VIRTIO_BALLOON_F_FREE_PAGE_HINT": 3,
    "VIRTIO_BALLOON_F_PAGE_POISON": 4,
    "VIRTIO_BALLOON_F_REPORTING": 5,
}
F_STATS_VQ = 1 << FEATURES["VIRTIO_BALLOON_F_STATS_VQ"]
F_DEFLATE_ON_OOM = 1 << FEATURES["VIRTIO_BALLOON_F_DEFLATE_ON_OOM"]
F_FREE_PAGE_HINT = 1 << FEATURES["VIRTIO_BALLOON_F_FREE_PAGE_HINT"]
F_REPORTING = 1 << FEATURES["VIRTIO_BALLOON_F_REPORTING"]
F_PAGE_POISON = 1 << FEATURES["VIRTIO_BALLOON_F_PAGE_POISON"]

#: Generic virtio feature bits ("transport" features) a balloon's feature words carry.
TRANSPORT_FEATURES = {
    "VIRTIO_F_NOTIFY_ON_EMPTY": 24,
    "VIRTIO_F_ANY_LAYOUT": 27,
    "VIRTIO_RING_F_INDIRECT_DESC": 28,
    "VIRTIO_RING_F_EVENT_IDX": 29,
    "VIRTIO_F_BAD_FEATURE": 30,  # legacy virtio-pci offers it; a driver that acks it is broken
    "VIRTIO_F_VERSION_1": 32,
    "VIRTIO_F_IOMMU_PLATFORM": 33,
    "VIRTIO_F_RING_PACKED": 34,
    "VIRTIO_F_IN_ORDER": 35,
    "VIRTIO_F_ORDER_PLATFORM": 36,
    "VIRTIO_F_SR_IOV": 37,
    "VIRTIO_F_RING_RESET": 40,
}
_T = {name: 1 << bit for name, bit in TRANSPORT_FEATURES.items()}
#: What QEMU's virtio-balloon-pci offers besides the balloon bits, with default properties (observed on 7.2 and
#: 10.0 with x-query-virtio-status): notify_on_empty, any_layout, indirect_desc, event_idx, the legacy BAD_FEATURE
#: bit, VERSION_1 (modern virtio-pci) and RING_RESET (queue_reset=on).
HOST_TRANSPORT = (_T["VIRTIO_F_NOTIFY_ON_EMPTY"] | _T["VIRTIO_F_ANY_LAYOUT"] | _T["VIRTIO_RING_F_INDIRECT_DESC"]
                  | _T["VIRTIO_RING_F_EVENT_IDX"] | _T["VIRTIO_F_BAD_FEATURE"] | _T["VIRTIO_F_VERSION_1"]
                  | _T["VIRTIO_F_RING_RESET"])
#: What Linux's virtio-pci acks of those (observed with a 6.1 guest on QEMU 7.2 and 10.0).
LINUX_TRANSPORT = _T["VIRTIO_RING_F_EVENT_IDX"] | _T["VIRTIO_F_VERSION_1"] | _T["VIRTIO_F_RING_RESET"]
ALL_FEATURES = {**FEATURES, **TRANSPORT_FEATURES}

#: Device status bits (virtio spec 2.1) as the driver sets them on probe.
STATUS_BITS = {"VIRTIO_CONFIG_S_ACKNOWLEDGE": 1, "VIRTIO_CONFIG_S_DRIVER": 2, "VIRTIO_CONFIG_S_DRIVER_OK": 4,
               "VIRTIO_CONFIG_S_FEATURES_OK": 8, "VIRTIO_CONFIG_S_NEEDS_RESET": 64, "VIRTIO_CONFIG_S_FAILED": 128}
STATUS_DRIVER_READY = 1 | 2 | 8 | 4


def feature_names(mask: int) -> list[str]:
    """The names of the bits set in ``mask`` (balloon and transport bits; unknown bits as ``bit N``), by bit."""
    names = {bit: name for name, bit in ALL_FEATURES.items()}
    return [names.get(bit, f"bit {bit}") for bit in range(64) if mask >> bit & 1]
TRACE_LENGTH = 256

_PACKERS: dict[int, struct.Struct] = {}


def encode_stats(entries: Iterable[tuple[int, int]]) -> bytes:
    """A report buffer: each ``(tag, value)`` as ``{le16 tag; le64 val}``, back to back."""
    entries = list(entries)
    return encode_values([t for t, _ in entries], [v for _, v in entries])


def _packer(entries: int) -> struct.Struct:
    """The packer of a report of ``entries`` entries (kept for the sizes guests send, up to 64 entries)."""
    packer = _PACKERS.get(entries)
    if packer is None:
        packer = struct.Struct("<" + "HQ" * entries)
        if entries <= 64:
            _PACKERS[entries] = packer
    return packer


def encode_values(tags: Sequence[int], values: Sequence[int]) -> bytes:
    """Like :func:`encode_stats` for parallel sequences (the guest's per-report fast path)."""
    n = len(tags)
    flat = [0] * (2 * n)
    flat[0::2] = tags
    flat[1::2] = values
    return _packer(n).pack(*flat)


def decode_entries(data: bytes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tags and the values of a report's complete entries, in order: QEMU stops reading when fewer than 10
    bytes are left, so a trailing partial entry is dropped.  The one decoder: the device's report handler (the
    virtual clock's hot path) and :func:`complete_entries` use it."""
    flat = _packer(len(data) // ENTRY_SIZE).unpack_from(data)
    return flat[0::2], flat[1::2]


def complete_entries(data: bytes) -> Iterator[tuple[int, int]]:
    """``(tag, value)`` for each complete entry of a report, in order (see :func:`decode_entries`)."""
    return zip(*decode_entries(data))


def decode_stats(data: bytes, n_known: int) -> list[tuple[int, int, bool]]:
    """``(tag, value, ignored)`` for each complete entry, as QEMU reads them.

    A tag >= ``n_known`` (QEMU's VIRTIO_BALLOON_S_NR: 10 up to QEMU 9.1, 16 from 9.2) is ignored, and so is a
    trailing partial entry (QEMU stops when fewer than 10 bytes are left).
    """
    return [(tag, value, tag >= n_known) for tag, value in complete_entries(data)]


def stat_name(tag: int) -> str | None:
    """The QMP key (without ``stat-``) for a tag, or None for a tag no QEMU knows."""
    info = BY_TAG.get(tag)
    return info.key if info else None


#: Config space sizes (Linux include/uapi/linux/virtio_balloon.h ``struct virtio_balloon_config``): the first two
#: fields, or all four (num_pages, actual, free_page_hint_cmd_id, poison_val).
CONFIG_SIZE_LEGACY, CONFIG_SIZE_FULL = 8, 16


@dataclass
class BalloonConfig:
    """The device's config space: ``{le32 num_pages; le32 actual; le32 free_page_hint_cmd_id; le32 poison_val}``.

    ``num_pages`` is what the host asks for (the balloon target); ``actual`` is what the driver says it holds
    (both in 4 KiB pages).  QEMU (hw/virtio/virtio-balloon.c ``virtio_balloon_config_size``) exposes all 16 bytes
    when it offers PAGE_POISON, FREE_PAGE_HINT or REPORTING -- PAGE_POISON is on by default -- and only the first 8
    otherwise.  The hint command id and the poison value stay 0 here: no free page hinting is modelled, and a
    default Linux guest does not poison freed pages (so it does not accept PAGE_POISON).
    """

    num_pages: int = 0
    actual: int = 0
    size: int = CONFIG_SIZE_FULL

    def to_bytes(self) -> bytes:
        return struct.pack("<IIII", self.num_pages, self.actual, 0, 0)[:self.size]


class StatsVirtqueue:
    """The one stats buffer and who holds it: ``"none"`` (no driver yet), ``"device"``, or ``"guest"``.

    ``on_report(data)`` is the device's queue handler (the guest added a filled buffer); ``on_request()`` is the
    guest driver's interrupt handler (the device returned the buffer).  Every exchange is traced.
    """

    __slots__ = ("holder", "exchanges", "on_report", "on_request", "_trace", "_seq", "_clock", "n_known")

    def __init__(self, clock, n_known: int) -> None:
        self.holder = "none"
        self.exchanges = 0
        self.on_report: Callable[[bytes], None] | None = None
        self.on_request: Callable[[], None] | None = None
        self._trace: deque = deque(maxlen=TRACE_LENGTH)
        self._seq = 0
        self._clock = clock
        self.n_known = n_known

    def _record(self, kind: str, data: bytes) -> None:
        clock = self._clock
        self._trace.append((self._seq, clock.vm_ns(), clock.wall_time(), kind, self.holder, data))
        self._seq += 1
        self.exchanges += 1

    def guest_add(self, data: bytes) -> None:
        """The driver adds a filled buffer and kicks: the device pops it and reads the report."""
        self.holder = "device"
        self._record("report", data)
        if self.on_report is not None:
            self.on_report(data)

    def device_return(self) -> bool:
        """The device pushes the held buffer back (a request for fresh stats).  False if it holds none."""
        if self.holder != "device":
            return False
        self.holder = "guest"
        self._record("request", b"")
        if self.on_request is not None:
            self.on_request()
        return True

    def reset(self) -> None:
        """Virtio reset: the queue is empty again until a driver adds a buffer (the trace is kept)."""
        self.holder = "none"

    def trace(self, since: int = 0) -> dict:
        """``x-balloonlab-trace``'s answer: exchanges with ``seq >= since`` (entries decoded as QEMU does)."""
        out = []
        for seq, vm_ns, when, kind, holder, data in self._trace:
            if seq < since:
                continue
            out.append({
                "seq": seq, "vm-clock-ns": vm_ns, "time": when, "kind": kind, "holder": holder,
                "bytes": data.hex(),
                "entries": [{"tag": t, "name": stat_name(t), "value": v, "ignored": ign}
                            for t, v, ign in decode_stats(data, self.n_known)],
            })
        return {"next": self._seq, "holder": self.holder, "exchanges": out}
