"""The device's log of stats reports: what a client replaying a virtual-clock advance reads (``x-balloonlab-reports``).

Why a second record next to the stats-queue trace (virtio.py): the trace keeps the last 256 exchanges with their
bytes and decoded entries, which is right for showing the virtqueue but costly to ship in bulk, and 256
exchanges are only 128 polls.  A lab that records history asks for every report of a day of virtual time, so this
log keeps just what ``guest-stats`` would have shown after each report (QEMU's stats array and ``last-update``) and
the host time of the report, as one flat ``array('Q')`` of fixed-width rows, and answers in columns (lists of
ints, which the JSON encoder writes at C speed).

The log exists only once a client asked for it (a device nobody replays pays nothing) and holds at most
:data:`REPORT_LOG_LENGTH` rows; when it is full the older half is dropped, and a reader that fell behind is told
where the log now starts (``first``).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

#: Rows (reports) the log holds at most; a reader should fetch at least every half of this.
REPORT_LOG_LENGTH = 4096


class ReportLog:
    """Rows of ``(host wall ns, last-update, stat 0 .. stat n-1)``; row ``seq`` counts every report the log saw."""

    __slots__ = ("n_stats", "first", "next", "_rows")

    def __init__(self, n_stats: int, start_seq: int = 0) -> None:
        self.n_stats = n_stats
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
            del rows[:drop * (self.n_stats + 2)]
            self.first += drop

    def since(self, seq: int, columns: Sequence[tuple[str, int]]) -> dict:
        """Reports with ``seq >= since`` as columns; ``columns`` name each stats column and give its index in
        the stats array (QEMU's wire order and tags)."""
        width = self.n_stats + 2
        start = min(max(seq, self.first), self.next) - self.first
        rows = self._rows[start * width:]
        return {"first": self.first, "next": self.next, "capacity": REPORT_LOG_LENGTH,
                "wall-ns": rows[0::width].tolist(), "last-update": rows[1::width].tolist(),
                "stats": {key: rows[2 + i::width].tolist() for key, i in columns}}
