"""QEMU's own window on a virtio device: ``x-query-virtio`` and ``x-query-virtio-status``, as QEMU words them.

A real QEMU reveals the balloon's feature words, device status and queue count only through these (unstable,
``x-``) commands, so the emulator answers them the same way, string for string (checked against QEMU 7.2 and 10.0
with and without a booted guest, see tests/test_emulator_virtio_qmp.py).  How QEMU builds the answer
(``hw/virtio/virtio-qmp.c``): each feature word is decoded against a table of known bits -- the transport bits,
then the device's own -- into ``"NAME: description"`` strings; the list is built by prepending, so it comes out in
reverse table order; bits no table knows stay in ``unknown-dev-features``.  The device status byte is decoded the
same way.

Version differences: QEMU 7.2's transport table has no ``VIRTIO_F_RING_RESET`` (so that bit, which 7.2 offers,
is "unknown" there), and its error says ``is not a VirtIODevice`` where 10.0 says ``is not a realized
VirtIODevice``.  The 9.2 profile answers as 10.0 (chosen, not observed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import QMPError
from .qom import qdict
from .virtio import ALL_FEATURES, STATUS_BITS, VIRTIO_ID_BALLOON

if TYPE_CHECKING:  # pragma: no cover
    from .device import VirtioBalloon

#: QEMU's virtio_transport_map, in its order: (name, description, first QEMU version that knows it).
_TRANSPORT_MAP = (
    ("VIRTIO_F_NOTIFY_ON_EMPTY", "Notify when device runs out of avail. descs. on VQ", (0, 0)),
    ("VIRTIO_F_ANY_LAYOUT", "Device accepts arbitrary desc. layouts", (0, 0)),
    ("VIRTIO_F_VERSION_1", "Device compliant for v1 spec (legacy)", (0, 0)),
    ("VIRTIO_F_IOMMU_PLATFORM", "Device can be used on IOMMU platform", (0, 0)),
    ("VIRTIO_F_RING_PACKED", "Device supports packed VQ layout", (0, 0)),
    ("VIRTIO_F_IN_ORDER", "Device uses buffers in same order as made available by driver", (0, 0)),
    ("VIRTIO_F_ORDER_PLATFORM", "Memory accesses ordered by platform", (0, 0)),
    ("VIRTIO_F_SR_IOV", "Device supports single root I/O virtualization", (0, 0)),
    ("VIRTIO_F_RING_RESET", "Driver can reset a queue individually", (8, 0)),
    ("VIRTIO_RING_F_INDIRECT_DESC", "Indirect descriptors supported", (0, 0)),
    ("VIRTIO_RING_F_EVENT_IDX", "Used & avail. event fields enabled", (0, 0)),
)
#: QEMU's virtio_balloon_feature_map, in its order.
_BALLOON_MAP = (
    ("VIRTIO_BALLOON_F_MUST_TELL_HOST", "Tell host before reclaiming pages"),
    ("VIRTIO_BALLOON_F_STATS_VQ", "Guest memory stats VQ available"),
    ("VIRTIO_BALLOON_F_DEFLATE_ON_OOM", "Deflate balloon when guest OOM"),
    ("VIRTIO_BALLOON_F_FREE_PAGE_HINT", "VQ reporting free pages enabled"),
    ("VIRTIO_BALLOON_F_PAGE_POISON", "Guest page poisoning enabled"),
    ("VIRTIO_BALLOON_F_REPORTING", "Page reporting VQ enabled"),
)
#: QEMU's virtio_config_status_map, in its order.
_STATUS_MAP = (
    ("VIRTIO_CONFIG_S_DRIVER_OK", "Driver setup and ready"),
    ("VIRTIO_CONFIG_S_FEATURES_OK", "Feature negotiation complete"),
    ("VIRTIO_CONFIG_S_DRIVER", "Guest OS compatible with device"),
    ("VIRTIO_CONFIG_S_NEEDS_RESET", "Irrecoverable error, device needs reset"),
    ("VIRTIO_CONFIG_S_FAILED", "Error in guest, device failed"),
    ("VIRTIO_CONFIG_S_ACKNOWLEDGE", "Valid virtio device found"),
)


def _convert(table: tuple[tuple[int, str], ...], bitmap: int) -> tuple[list[str], int]:
    """QEMU's CONVERT_FEATURES: the descriptions of the set bits, in reverse table order, and the bits left."""
    out: list[str] = []
    for mask, text in table:
        if bitmap & mask:
            out.insert(0, text)
            bitmap ^= mask
    return out, bitmap


def _table(version: tuple[int, int], rows: tuple[tuple, ...], bits: dict[str, int],
           shift: bool = True) -> tuple[tuple[int, str], ...]:
    """(mask, "NAME: description") for the rows this QEMU version's table has; ``bits`` maps names to bit numbers
    (``shift``) or to masks (status bits)."""
    return tuple(((1 << bits[name]) if shift else bits[name], f"{name}: {desc}")
                 for name, desc, *since in rows if not since or version >= since[0])


def decode_features(version: tuple[int, int], bitmap: int) -> dict:
    """``VirtioDeviceFeatures`` of a balloon: transports, dev-features, and unknown-dev-features if any bit is left."""
    transports, bitmap = _convert(_table(version, _TRANSPORT_MAP, ALL_FEATURES), bitmap)
    dev, bitmap = _convert(_table(version, _BALLOON_MAP, ALL_FEATURES), bitmap)
    pairs: list[tuple[str, Any]] = [("transports", transports), ("dev-features", dev)]
    if bitmap:
        pairs.append(("unknown-dev-features", bitmap))
    return qdict(pairs)


def decode_status(version: tuple[int, int], bitmap: int) -> dict:
    statuses, bitmap = _convert(_table(version, _STATUS_MAP, STATUS_BITS, shift=False), bitmap)
    pairs: list[tuple[str, object]] = [("statuses", statuses)]
    if bitmap:
        pairs.append(("unknown-statuses", bitmap))
    return qdict(pairs)


def not_a_virtio_device(version: tuple[int, int], path: str) -> QMPError:
    what = "a realized VirtIODevice" if version >= (8, 0) else "a VirtIODevice"
    return QMPError("GenericError", f"Path {path} is not {what}")


def virtio_list(backend_path: str | None) -> list[dict]:
    """``x-query-virtio``: every realized virtio device (here: the balloon's backend, if any)."""
    if backend_path is None:
        raise QMPError("GenericError", "No virtio devices found")
    return [qdict((("path", backend_path), ("name", "virtio-balloon")))]


def virtio_status(dev: "VirtioBalloon", vm_running: bool) -> dict:
    """``x-query-virtio-status`` of the balloon's backend (``.../virtio-backend``)."""
    v = dev.version
    return qdict((
        ("name", "virtio-balloon"),
        ("device-id", VIRTIO_ID_BALLOON),
        ("vhost-started", False),
        ("device-endian", "little"),
        ("guest-features", decode_features(v, dev.guest_features)),
        ("host-features", decode_features(v, dev.host_features)),
        ("backend-features", decode_features(v, 0)),
        ("num-vqs", dev.num_queues),
        ("status", decode_status(v, dev.device_status)),
        ("isr", 0),
        ("queue-sel", dev.queue_sel),
        ("vm-running", vm_running),
        ("broken", False),
        ("disabled", False),
        ("use-started", True),
        ("started", bool(dev.device_status & STATUS_BITS["VIRTIO_CONFIG_S_DRIVER_OK"])),
        ("start-on-kick", False),
        ("disable-legacy-check", False),
        ("bus-name", ""),
        ("use-guest-notifier-mask", True),
    ))
