"""What a lab tells its subscribers: one :class:`LabUpdate` per change, on balloonlab's background thread.

Subscribers (``lab.subscribe``) are the panel, ``%balloon watch`` and history.  They must return quickly and must
not print: see the threading model in ``docs/architecture.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..stats import GuestStats

#: What changed: a new stats report, the polling interval, the balloon's actual size, a QMP event, the connection
#: lost, or a balloon target requested through this lab.
UpdateKind = Literal["stats", "interval", "actual", "event", "disconnected", "target"]
UPDATE_KINDS: tuple[UpdateKind, ...] = get_args(UpdateKind)


@dataclass(frozen=True)
class LabUpdate:
    """What changed, as delivered to ``lab.subscribe`` callbacks (on balloonlab's background thread)."""

    kind: UpdateKind
    stats: GuestStats | None = None
    interval: int | None = None
    actual: int | None = None
    event: dict | None = None
    error: str | None = None  #: for "disconnected": why
    target: int | None = None  #: for "target": the bytes just requested with QMP ``balloon`` through this lab
    #: host time it was observed; for a report replayed by a virtual-clock advance, the (virtual) time it came
    time: float = field(default_factory=time.time)
