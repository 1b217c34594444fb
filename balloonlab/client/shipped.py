"""Recordings of real QEMU shipped with balloonlab (package data in ``balloonlab/recordings/``):
``balloonlab.recordings()`` lists them, ``balloonlab.replay(NAME)`` plays one.

Each was recorded from a real ``qemu-system-x86_64`` (the version is in its header) booting balloonlab's tiny
Linux guest, with busybox workloads run in the guest; ``tools/record-sessions.py`` records them again (what each
session does is written there, step by step, and each step is a ``mark`` in the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SUFFIX = ".blab.gz"

#: name -> one line on what the recording shows.
CATALOGUE: dict[str, str] = {
    "tmpfs-fill-7.2": "QEMU 7.2, free page reporting off: a 200 MiB tmpfs fill and its removal; free memory "
                      "comes back in the guest, the host keeps the pages (host-rss stays high)",
    "tmpfs-fill-fpr-7.2": "QEMU 7.2, free page reporting on: the same fill and removal; the guest reports the freed "
                          "pages and the host's RSS falls back",
    "inflate-under-load-7.2": "QEMU 7.2: a 96 MiB tmpfs load, then the balloon inflated to 256 MiB and deflated "
                              "again (notebook 04's session); total-memory follows actual",
    "deflate-on-oom-7.2": "QEMU 7.2, deflate-on-oom on: balloon at 160 MiB, the guest fills 200 MiB of tmpfs and "
                          "the driver deflates by itself instead of killing a process",
    "page-cache-10.0": "QEMU 10.0 (all 16 stats): page cache grows as files are written and read, then "
                       "drop_caches empties it; disk-caches and available-memory move apart from free-memory",
}


@dataclass(frozen=True)
class ShippedRecording:
    """One shipped recording: ``balloonlab.replay(rec.name)`` opens it."""

    name: str
    description: str
    path: Path

    def __repr__(self) -> str:
        return f"<ShippedRecording {self.name}: {self.description}>"


def shipped_path(name: str) -> Path | None:
    """The file of a shipped recording, or None."""
    if name not in CATALOGUE:
        return None
    path = Path(str(resources.files("balloonlab").joinpath("recordings").joinpath(name + SUFFIX)))
    return path if path.is_file() else None


def recordings() -> list[ShippedRecording]:
    """The recordings of real QEMU that came with balloonlab, each with a one-line description."""
    found = []
    for name, description in CATALOGUE.items():
        path = shipped_path(name)
        if path is not None:
            found.append(ShippedRecording(name, description, path))
    return found


__all__ = ["CATALOGUE", "ShippedRecording", "recordings", "shipped_path"]
