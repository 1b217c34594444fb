"""The live backend: a real ``qemu-system-x86_64`` (TCG) booting balloonlab's tiny Linux guest.

:func:`ensure_image` builds (once) and caches the guest: a Debian cloud kernel and a busybox initramfs.
:class:`LiveVM` boots QEMU with it, a virtio-balloon device and a QMP socket, runs shell commands in the guest
over a second serial port, and never leaves a QEMU behind (QMP quit, SIGTERM, SIGKILL; parent-death signal).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GuestImage", "ensure_image", "LiveVM"]


def __getattr__(name: str) -> Any:
    # Lazy, so `balloonlab guest build` does not import the launcher (and the launcher not the image builder).
    if name in ("GuestImage", "ensure_image"):
        from . import guest_image

        return getattr(guest_image, name)
    if name == "LiveVM":
        from .launcher import LiveVM

        return LiveVM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
