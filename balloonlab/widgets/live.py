"""What every live view shares (the panel, the fleet panel): one UpdatePump thread fed by subscriptions, waited
for in scripts and tests, and a close that stops it all and closes every widget the view made."""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as widgets

from ..client.pump import UpdatePump


def close_tree(root: widgets.Widget, skip: widgets.Widget | None = None) -> None:
    """Close ``root`` and every widget reachable through its synced traits (children, marks, scales, layouts).

    ``Box.close`` closes only the box; a panel owns a few dozen widgets (bqplot alone makes scales, axes, marks
    and their layouts), each registered in the kernel until closed.
    """
    seen: set[int] = set()
    stack: list[Any] = [root]
    found: list[widgets.Widget] = []
    while stack:
        item = stack.pop()
        if isinstance(item, widgets.Widget):
            if id(item) in seen:
                continue
            seen.add(id(item))
            found.append(item)
            stack.extend(getattr(item, key, None) for key in item.keys)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    for w in found:
        if w is not skip:
            w.close()


class LiveView(widgets.VBox):
    """A VBox fed by subscriptions through one :class:`UpdatePump`.  Subclasses set ``_pump``,
    ``_unsubscribe`` and ``_closed`` in their constructor."""

    _pump: UpdatePump
    _unsubscribe: Callable[[], None] | None
    _closed: bool

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every update and request queued so far is applied (for scripts and tests)."""
        return self._pump.wait_idle(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unsubscribe, stop the view's thread, and close every widget of the view."""
        if self._closed:
            return
        self._closed = True
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        self._pump.stop()
        close_tree(self, skip=self)
        super().close()
