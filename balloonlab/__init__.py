"""balloonlab: QEMU's virtio-balloon guest statistics as an interactive lab.

    import balloonlab
    lab = balloonlab.emulate(guest="linux")        # an emulated QEMU speaking real QMP
    lab = balloonlab.connect("/path/to/qmp.sock")  # any QEMU (or `balloonlab emulate`)
    lab = balloonlab.launch(memory="512M")         # boots a tiny Linux guest under qemu-system-x86_64
    lab.polling_interval = 2
    lab.stats()

In IPython: ``%load_ext balloonlab``, then ``%balloon`` and ``%%qmp``.

Imports are lazy so that ``balloonlab emulate`` on a server does not pull in IPython or ipywidgets.
"""

from __future__ import annotations

from typing import Any

from . import errors as _errors
from .errors import *  # noqa: F403  (every exception class is public API)

__version__ = "0.1.0"

#: Public names imported on first use: name -> (module, attribute).
_LAZY = {
    "emulate": ("balloonlab.client.balloon", "emulate"),
    "connect": ("balloonlab.client.balloon", "connect"),
    "launch": ("balloonlab.client.balloon", "launch"),
    "Balloon": ("balloonlab.client.balloon", "Balloon"),
    "GuestStats": ("balloonlab.stats", "GuestStats"),
    "BalloonPanel": ("balloonlab.widgets", "BalloonPanel"),
    "LabUpdate": ("balloonlab.client.updates", "LabUpdate"),
    "VirtioState": ("balloonlab.client.balloon", "VirtioState"),
    "replay": ("balloonlab.client.replay", "replay"),
    "recordings": ("balloonlab.client.shipped", "recordings"),
    "open_recording": ("balloonlab.client.replay", "load"),
    "Recorder": ("balloonlab.client.recording", "Recorder"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'balloonlab' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The lazy names too, so tab completion offers ``balloonlab.emulate`` before it was first used."""
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext balloonlab``: register ``%balloon`` and ``%%qmp``."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext balloonlab``: remove the magics and stop their background work."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)


# Ordered by importance: the three ways to get a lab, the lab, what it returns, the widget, then the rest.
__all__ = [
    "emulate",
    "connect",
    "launch",
    "Balloon",
    "GuestStats",
    "BalloonPanel",
    "LabUpdate",
    "VirtioState",
    "replay",
    "recordings",
    "open_recording",
    "Recorder",
    "load_ipython_extension",
    "unload_ipython_extension",
    *_errors.__all__,
]
