"""A bounded record of one lab's samples and events, small enough to keep a day of 1-second reports.

Why not a list of dicts: a dict per sample costs about 2 KB in CPython, so a day at 1 s (86 400 samples) would
need ~170 MB.  Here each column (host time, last-update, interval, actual, one per stat) is an ``array('q')``;
every :data:`CHUNK` rows the open columns are sealed: each value is XOR-ed with its predecessor (slowly changing
memory figures then differ only in their low bytes) and zlib-compressed.  A day of realistic 16-stat samples takes
a few MB (tests/test_history.py measures it).  The bound is by count: once more than ``max_samples`` rows are
held, the oldest sealed chunk is dropped, so between ``max_samples - CHUNK`` and ``max_samples`` rows survive.

Values are stored as signed 64-bit two's complement of QEMU's uint64: the wire's "unset" (2**64 - 1) becomes -1,
which reads back as ``None``; no information is lost.

Samples are added on the lab's background thread; readers (``to_dataframe``, a widget) may run on any thread,
hence the lock.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import os
import sys
import threading
import zlib
from array import array
from typing import IO, Any, Callable, Mapping, Sequence

from ..stats import STATS, GuestStats

CHUNK = 1024
_U64 = 1 << 64
_FIXED = ("time", "last-update", "interval", "actual")
_STAT_KEYS = tuple(s.key for s in STATS)
_COLUMNS = _FIXED + _STAT_KEYS
_NONE = -1  # stored for "no value" in every column


def _store(value: int | None) -> int:
    if value is None:
        return _NONE
    value = int(value)
    return value - _U64 if value >= (1 << 63) else value


def _load(value: int) -> int | None:
    if value == _NONE:
        return None
    return value + _U64 if value < 0 else value


def _seal(column: array) -> bytes:
    """XOR each value with its predecessor (in numpy: a day of reports seals 84 chunks of 20 columns, which a
    Python loop made a quarter of a virtual day's CPU), then zlib."""
    import numpy as np  # here, not at the top: a lab that never seals a chunk does not pay numpy's import

    values = np.frombuffer(column, dtype=np.int64)
    deltas = values.copy()
    np.bitwise_xor(values[1:], values[:-1], out=deltas[1:])
    return zlib.compress(deltas.tobytes(), 6)


def _unseal(blob: bytes) -> array:
    import numpy as np

    deltas = np.frombuffer(zlib.decompress(blob), dtype=np.int64)
    return array("q", np.bitwise_xor.accumulate(deltas).tobytes() if len(deltas) else b"")


class History:
    """Samples (one row per new guest report, with interval and actual at that moment) and QMP events.

    A lab records from the moment it connects (``enabled``, which ``emulate/connect/launch(history=False)`` or
    ``lab.history.enabled = False`` turn off); while anything subscribes (a panel, ``%balloon watch``) it records
    anyway.
    """

    def __init__(self, max_samples: int = 86_400, max_events: int = 10_000) -> None:
        if max_samples < CHUNK:
            raise ValueError(f"max_samples must be at least {CHUNK}")
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self._open: dict[str, array] = {c: array("q") for c in _COLUMNS}
        self._sealed: collections.deque[tuple[int, dict[str, bytes]]] = collections.deque()
        self._sealed_rows = 0
        self._keys: list[str] = []  # stat keys seen, in table order
        self._seen: set[str] = set()
        self._events: collections.deque[tuple[float, dict]] = collections.deque(maxlen=max_events)
        self._enabled = False
        #: Set by the lab: called with no arguments when ``enabled`` changes (starts or stops its follower).
        self.on_enabled_change: Callable[[], None] | None = None

    # Recording -------------------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """Record even when nobody subscribes (costs one ``qom-get`` per report on the lab's background loop)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        changed = bool(value) != self._enabled
        self._enabled = bool(value)
        if changed and self.on_enabled_change is not None:
            self.on_enabled_change()

    def add(self, time: float, stats: GuestStats, interval: int | None = None, actual: int | None = None) -> None:
        """Append one sample (``time`` in host seconds since the epoch)."""
        with self._lock:
            o = self._open
            o["time"].append(round(time * 1000))
            o["last-update"].append(stats.last_update_seconds or _NONE)
            o["interval"].append(_store(interval))
            o["actual"].append(_store(actual))
            values = stats.to_dict()
            for key in _STAT_KEYS:
                v = values.get(key)
                o[key].append(_NONE if v is None else (v - _U64 if v >= (1 << 63) else v))
            if not self._seen.issuperset(values):
                self._seen.update(values)
                self._keys = [k for k in _STAT_KEYS if k in self._seen]
            if len(o["time"]) >= CHUNK:
                self._seal_open()

    def add_columns(self, time_ms: Sequence[int], last_update: Sequence[int], stats: Mapping[str, Sequence[int]],
                    interval: int | None = None, actual: int | None = None) -> None:
        """Append many samples at once (the reports of a virtual-clock advance): ``time_ms`` in host milliseconds
        since the epoch, ``last_update`` in seconds (0: never), ``stats`` by key (``"free-memory"``) as QEMU's
        uint64 values (2**64 - 1: unset); every column as long as ``time_ms``.  Stats not given are unset.

        Why a second way in: :meth:`add` costs a GuestStats and a Python loop per sample, which a day of 1 s
        reports (86 400) would pay again and again; here each column is converted and appended by C code.
        """
        n = len(time_ms)
        if not n:
            return
        unset = array("q", [_NONE]) * n
        cols = {"time": array("q", time_ms), "last-update": array("q", [v or _NONE for v in last_update]),
                "interval": array("q", [_store(interval)]) * n, "actual": array("q", [_store(actual)]) * n}
        for key in _STAT_KEYS:
            values = stats.get(key)
            # uint64 read back as int64: QEMU's "unset" (2**64 - 1) becomes -1, as _store() does one at a time
            cols[key] = unset if values is None else array("q", array("Q", values).tobytes())
        with self._lock:
            done = 0
            while done < n:
                take = min(CHUNK - len(self._open["time"]), n - done)
                for name, column in self._open.items():
                    column.extend(cols[name][done:done + take])
                done += take
                if len(self._open["time"]) >= CHUNK:
                    self._seal_open()
            if not self._seen.issuperset(stats):
                self._seen.update(stats)
                self._keys = [k for k in _STAT_KEYS if k in self._seen]

    def add_event(self, event: dict, time: float | None = None) -> None:
        """Record a QMP event (wire dict); ``time`` defaults to the event's own timestamp."""
        if time is None:
            ts = event.get("timestamp") or {}
            time = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
        with self._lock:
            self._events.append((float(time), event))

    def _seal_open(self) -> None:
        n = len(self._open["time"])
        self._sealed.append((n, {c: _seal(col) for c, col in self._open.items()}))
        self._sealed_rows += n
        self._open = {c: array("q") for c in _COLUMNS}
        while self._sealed_rows > self.max_samples and self._sealed:
            dropped, _ = self._sealed.popleft()
            self._sealed_rows -= dropped

    def clear(self) -> None:
        with self._lock:
            self._open = {c: array("q") for c in _COLUMNS}
            self._sealed.clear()
            self._sealed_rows = 0
            self._events.clear()

    # Reading ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._sealed_rows + len(self._open["time"])

    def __repr__(self) -> str:
        return (f"<History {len(self)} samples, {len(self._events)} events, "
                f"{'recording' if self._enabled else 'records while watched'}>")

    @property
    def stat_keys(self) -> tuple[str, ...]:
        """The stats that appeared in any sample (what this QEMU reports)."""
        return tuple(self._keys)

    def _raw_columns(self, names: tuple[str, ...]) -> dict[str, array]:
        """Consistent copies of several columns (one lock hold, so rows line up); decoded outside the lock."""
        with self._lock:
            sealed = [blobs for _, blobs in self._sealed]
            open_ = {n: array("q", self._open[n]) for n in names}
        out = {}
        for n in names:
            col = array("q")
            for blobs in sealed:
                col.extend(_unseal(blobs[n]))
            col.extend(open_[n])
            out[n] = col
        return out

    @staticmethod
    def _decode(name: str, raw: array) -> list[Any]:
        if name == "time":
            return [v / 1000 for v in raw]
        return [_load(v) for v in raw]

    def column(self, name: str) -> list[Any]:
        """One column as a list: ``"time"`` (float seconds), ``"last-update"`` (int or None), ``"interval"``,
        ``"actual"`` or a stat key; ``None`` where there was no value."""
        if name not in _COLUMNS:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return self._decode(name, self._raw_columns((name,))[name])

    def columns_dict(self, names: tuple[str, ...] | None = None) -> dict[str, list[Any]]:
        """Several columns at once, guaranteed to be the same length (default: every column)."""
        names = self.columns if names is None else tuple(names)
        for n in names:
            if n not in _COLUMNS:
                raise KeyError(f"no column {n!r}; columns: {', '.join(self.columns)}")
        return {n: self._decode(n, raw) for n, raw in self._raw_columns(names).items()}

    @property
    def columns(self) -> tuple[str, ...]:
        return _FIXED + tuple(self._keys)

    def rows(self) -> list[dict[str, Any]]:
        """Every sample as a dict (convenient, not compact: for export, not for storage)."""
        cols = self.columns_dict()
        n = len(cols["time"])
        return [{c: cols[c][i] for c in cols} for i in range(n)]

    def latest(self) -> dict[str, Any] | None:
        """The newest sample as a dict (cheap: decodes at most one chunk), or None."""
        with self._lock:
            if self._open["time"]:
                last = {n: self._open[n][-1] for n in self.columns}
            elif self._sealed:
                blobs = self._sealed[-1][1]
                last = {n: _unseal(blobs[n])[-1] for n in self.columns}
            else:
                return None
        return {n: (v / 1000 if n == "time" else _load(v)) for n, v in last.items()}

    @property
    def events(self) -> list[dict]:
        """Events recorded, oldest first (wire dicts)."""
        with self._lock:
            return [e for _, e in self._events]

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the samples (arrays and compressed chunks)."""
        with self._lock:
            total = sum(sys.getsizeof(a) for a in self._open.values())
            total += sum(sys.getsizeof(b) for _, blobs in self._sealed for b in blobs.values())
        return total

    def to_dataframe(self) -> Any:
        """A pandas DataFrame indexed by host time (UTC); stats as nullable unsigned ints. Needs pandas."""
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is in the lab extra
            raise ImportError("History.to_dataframe() needs pandas: pip install pandas "
                              "(or use to_csv / rows())") from None
        cols = self.columns_dict()
        times = pd.to_datetime(cols["time"], unit="s", utc=True)
        data: dict[str, Any] = {}
        data["last-update"] = pd.to_datetime([v if v else None for v in cols["last-update"]], unit="s", utc=True)
        data["interval"] = pd.array(cols["interval"], dtype="Int64")
        data["actual"] = pd.array(cols["actual"], dtype="Int64")
        for key in self._keys:
            data[key] = pd.array(cols[key], dtype="UInt64")
        return pd.DataFrame(data, index=pd.DatetimeIndex(times, name="time"))

    def to_csv(self, path_or_file: str | os.PathLike | IO[str]) -> None:
        """Write every sample as CSV (time as ISO 8601 UTC; empty cell = no value)."""
        if isinstance(path_or_file, (str, os.PathLike)):
            with open(path_or_file, "w", newline="") as f:
                self._write_csv(f)
        else:
            self._write_csv(path_or_file)

    def _write_csv(self, f: IO[str]) -> None:
        writer = csv.writer(f)
        cols = self.columns
        writer.writerow(cols)
        for row in self.rows():
            out = []
            for c in cols:
                v = row[c]
                if v is None:
                    out.append("")
                elif c == "time":
                    out.append(dt.datetime.fromtimestamp(v, dt.timezone.utc).isoformat(timespec="milliseconds"))
                else:
                    out.append(str(v))
            writer.writerow(out)

    def to_csv_string(self) -> str:
        buf = io.StringIO()
        self._write_csv(buf)
        return buf.getvalue()


__all__ = ["History", "CHUNK"]
