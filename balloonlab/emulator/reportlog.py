"""The device's log of stats reports: what a client replaying a virtual-clock advance reads (``x-balloonlab-reports``).

Why a second record next to the stats-queue trace (virtio.py): the trace keeps the last 256 exchanges with their
bytes and decoded entries, which is right for showing the virtqueue but costly to ship in bulk, and 256
exchanges are only 128 polls.  A lab that records history asks for every report of a day of virtual time, so this
log keeps just what ``guest-stats`` would have shown after each report (the stats in QEMU's wire order and
``last-update``) and the host time of the report, as one flat ``array('Q')`` of fixed-width rows.  It answers with
the rows as little-endian uint64 in base64 (as QEMU's own commands carry bulk bytes, e.g. ``ringbuf-read``):
encoding, sending and decoding a day of reports that way costs a few milliseconds, where the same numbers as
JSON lists cost a few hundred.

The log exists only once a client asked for it (a device nobody replays pays nothing) and holds at most
:data:`REPORT_LOG_LENGTH` rows; when it is full the older half is dropped, and a reader that fell behind is told
where the log now starts (``first``).
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence

#: Rows (reports) the log holds at most; a reader should fetch at least every half of this.
REPORT_LOG_LENGTH = 4096


class ReportLog:
    """Rows of ``(host wall ns, last-update, each stat in wire order)``; row ``seq`` counts every report logged."""

    __slots__ = ("keys", "first", "next", "_rows")

    def __init__(self, keys: Sequence[str], start_seq: int = 0) -> None:
        self.keys = tuple(keys)  #: the stats' QMP keys, in the order of the row
        self.first = start_seq  #: seq of the oldest row held
        self.next = start_seq  #: seq the next report gets
        self._rows = array("Q")

    def append(self, wall_ns: int, last_update: int, stats: Sequence[int]) -> None:
        rows = self._rows
        rows.append(wall_ns)
        rows.append(last_update)
        rows.extend(stats)
        self.next += 1
        if self.next - self.first > REPORT_LOG_LENGTH:
            drop = REPORT_LOG_LENGTH // 2
            del rows[:drop * (len(self.keys) + 2)]
            self.first += drop

    def since(self, seq: int) -> dict:
        """The reports with ``seq >= since``: ``rows`` (base64 of little-endian uint64, row after row, each as
        ``columns`` names them), with the cursor ``next`` and the oldest report held, ``first``."""
        width = len(self.keys) + 2
        start = min(max(seq, self.first), self.next) - self.first
        rows = self._rows[start * width:]
        if sys.byteorder == "big":
            rows.byteswap()
        return {"first": self.first, "next": self.next, "capacity": REPORT_LOG_LENGTH,
                "columns": ["wall-ns", "last-update", *self.keys],
                "rows": base64.b64encode(rows.tobytes()).decode("ascii")}

