"""IPython magics: ``%balloon`` (start a lab, poll, stats, watch, panel, target, info, advance, close) and
``%%qmp`` (QMP commands as QEMU's docs write them).

``%load_ext balloonlab`` (or ``%load_ext balloonlab.magics``) registers both; ``%unload_ext`` removes them again
and stops their background work: every watch is stopped, every panel ``%balloon panel`` made is closed, and
every lab the magics started is closed (labs made in Python and adopted with ``%balloon use`` are left alone).

Layout: :mod:`.core` (the Magics class and its per-shell state), :mod:`.subcommands` (one parser and handler per
``%balloon`` subcommand), :mod:`.qmp` (running ``%%qmp`` commands), :mod:`.info` (``%balloon info``); the cell
text is parsed by :mod:`balloonlab.qmp_text` and the live view is :mod:`balloonlab.watch`.
"""

from __future__ import annotations

from typing import Any

from .core import BalloonMagics

__all__ = ["BalloonMagics", "load_ipython_extension", "unload_ipython_extension"]

_REGISTRY_KEY = BalloonMagics.__name__


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%balloon`` and ``%%qmp`` on ``ipython`` (one BalloonMagics instance per shell)."""
    if _REGISTRY_KEY in ipython.magics_manager.registry:
        return
    ipython.register_magics(BalloonMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove ``%balloon`` and ``%%qmp``; stop every watch, close the panels and labs the magics started.

    IPython has no ``unregister_magics``: the names are popped from ``magics_manager.magics`` by hand.
    """
    manager = ipython.magics_manager
    instance = manager.registry.pop(_REGISTRY_KEY, None)
    for kind, names in BalloonMagics.magics.items():
        for name in names:
            bound = manager.magics[kind].get(name)
            if bound is not None and getattr(bound, "__self__", None) is instance:
                manager.magics[kind].pop(name)
    if instance is not None:
        instance.shutdown()
