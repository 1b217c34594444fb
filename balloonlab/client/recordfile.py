"""The recording file: JSON Lines, gzip-compressed when the name ends in ``.gz`` (docs/recordings.md).

Line 1 is the header (format name and version, QEMU version, RAM, the balloon's QOM path and properties, backend,
where and when).  Every later line is one record with a ``kind``: ``qmp`` (one exchange balloonlab made),
``event`` (a QMP event), ``stats`` (one guest report), ``mark`` (a note, e.g. the workload that starts now) and
``end``.  Writing lives in ``client/recording.py``, playing back in ``client/replay.py``; this module only knows the
format, so that everything reading recordings (replay, the host's workloads, a pandas user) reads it one way.

Reading is strict where a damaged file would mislead and lenient where a crash is the likely cause: an empty file,
a bad header, a wrong version, or a line that is not JSON *followed by more lines* raise
:class:`~balloonlab.errors.RecordingError` naming the file and the line; an unfinished last line (or a gzip stream
cut off) is what a crash leaves, so the recording ends at its last complete line and says so (``cut_off``).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, cast

from ..errors import RecordingError
from ..stats import UNSET, GuestStats

FORMAT = "balloonlab-recording"
#: The format version this balloonlab writes and reads.  Bump it on any change a reader must know about.
VERSION = 1
RecordKind = Literal["qmp", "event", "stats", "mark", "end"]
RECORD_KINDS: tuple[RecordKind, ...] = ("qmp", "event", "stats", "mark", "end")
#: The header's required members and their JSON types.
_HEADER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "started": (int, float), "backend": str, "qemu": str, "ram": int,
    "device": dict, "interval": int, "clock": str}


def is_gzip_name(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith(".gz")


def open_for_writing(path: str | os.PathLike[str]) -> IO[str]:
    """A text stream for a new recording (gzip for ``*.gz``: level 6, which costs a third of level 9's CPU and
    loses a few percent of size on these files)."""
    if is_gzip_name(path):
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=6, newline="\n")
    return open(path, "w", encoding="utf-8", newline="\n")


#: One encoder for every line: json.dumps with options builds a new JSONEncoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(record: dict) -> str:
    """One line (compact separators: a day of records is mostly punctuation otherwise)."""
    return _ENCODER.encode(record) + "\n"


@dataclass
class Report:
    """One recorded stats report: host time ``t`` (the lab's clock), VM seconds since recording began ``vm``,
    and what ``guest-stats`` said (``raw``: ``{"stats": {...}, "last-update": N}``)."""

    t: float
    vm: float
    raw: dict
    initial: bool = False  #: the report the device held when recording began
    host_rss: int | None = None  #: what a launched VM's QEMU held on the host (VmRSS), when known

    @property
    def last_update(self) -> int:
        return int(self.raw.get("last-update") or 0)

    @property
    def stats(self) -> GuestStats:
        return GuestStats(self.raw)


@dataclass
class Recording:
    """A recording read back: its header and what a replay or an analysis needs (reports, events, marks, the host
    side's balloon targets and interval changes).  Exchanges are counted, not kept: :func:`iter_records` yields
    them all for whoever wants them."""

    path: str
    header: dict
    reports: list[Report] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  #: {"t", "vm", "event": wire dict}
    marks: list[dict] = field(default_factory=list)  #: {"t", "vm", "text"}
    #: (t, bytes) of each accepted ``balloon``, t on the lab's clock
    targets: list[tuple[float, int]] = field(default_factory=list)
    #: (t, seconds) of each accepted polling-interval qom-set
    intervals: list[tuple[float, int]] = field(default_factory=list)
    exchanges: int = 0
    end: dict | None = None  #: the ``end`` record (why recording stopped), None when it was cut off
    #: True when the file ends in an unfinished line or gzip stream (a crash): it ends at its last complete line.
    cut_off: bool = False
    lines: int = 0

    @property
    def qemu_version(self) -> str:
        return str(self.header["qemu"])

    @property
    def started(self) -> float:
        return float(self.header["started"])

    @property
    def duration(self) -> float:
        """VM seconds from the start to the last record."""
        last = [r.vm for r in self.reports[-1:]] + [e["vm"] for e in self.events[-1:]]
        if self.end is not None:
            last.append(self.end.get("vm", 0.0))
        return max(last, default=0.0)

    def memory_curve(self, definition: str = "total-available") -> Iterator[tuple[float, int]]:
        """``(VM seconds, bytes the guest uses)`` at each report that says it (``GuestStats.used_memory``): the
        source a simulated host's workload follows to replay this guest's appetite."""
        for report in self.reports:
            used = report.stats.used_memory(definition)
            if used is not None:
                yield report.vm, used

    def appetite(self) -> Iterator[tuple[float, int]]:
        """``(VM seconds, bytes the guest's own programs and kernel use)``: :meth:`memory_curve` without the
        balloon's pages where the recorded device counted them as used.  With ``deflate-on-oom`` the driver's
        pages stay in total-memory and are not available, so the stats count an inflated balloon as used memory
        (``deflate-on-oom-7.2``: 378 MiB "used" by an idle guest holding a 352 MiB balloon); the balloon's size at
        each report comes from the header's ``actual`` and each ``BALLOON_CHANGE``."""
        ram = int(self.header["ram"])
        counted = (self.header["device"].get("properties") or {}).get("deflate-on-oom") is True
        actual = self.header.get("actual")
        balloon = ram - actual if isinstance(actual, int) else 0
        changes = [(e["vm"], ram - e["event"]["data"]["actual"]) for e in self.events
                   if e["event"].get("event") == "BALLOON_CHANGE"
                   and isinstance((e["event"].get("data") or {}).get("actual"), int)]
        i = 0
        for vm, used in self.memory_curve():
            while i < len(changes) and changes[i][0] <= vm:
                balloon = changes[i][1]
                i += 1
            yield vm, max(0, used - balloon) if counted else used

    def to_dataframe(self) -> Any:
        """One row per report: host time, VM seconds, last-update and each stat (pandas)."""
        import pandas as pd

        rows = [{"time": pd.Timestamp(r.t, unit="s", tz="UTC"), "vm": r.vm, "last-update": r.last_update,
                 **r.stats.to_dict()} for r in self.reports]
        return pd.DataFrame(rows).set_index("time") if rows else pd.DataFrame()


def _open_for_reading(path: str) -> IO[bytes]:
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open the recording: {exc.strerror or exc}") from None
    with raw:
        magic = raw.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))  # a binary stream that typeshed types apart
    if is_gzip_name(path) and magic:
        raise RecordingError(f"{path}: line 1: the name ends in .gz but the file is not gzip-compressed")
    return open(path, "rb")


def _lines(path: str) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, complete) for each line; a stream cut off mid-way ends with an incomplete one."""
    number = 0
    with _open_for_reading(path) as f:
        while True:
            try:
                line = f.readline()
            except EOFError:  # a gzip stream without its end: what was decompressed so far is all there is
                yield number + 1, b"", False
                return
            except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise RecordingError(f"{path}: line {number + 1}: the gzip stream is corrupt ({exc})") from None
            if not line:
                return
            number += 1
            yield number, line, line.endswith(b"\n")


def _check_header(path: str, header: Any) -> dict:
    where = f"{path}: line 1"
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{where}: not a balloonlab recording (its first line has no \"format\": "
                             f"\"{FORMAT}\" header); record one with lab.record(PATH)")
    version = header.get("version")
    if version != VERSION:
        raise RecordingError(f"{where}: format version {version!r}; this balloonlab reads version {VERSION} "
                             "(record it again, or use the balloonlab that wrote it)")
    for name, typ in _HEADER_FIELDS.items():
        if not isinstance(header.get(name), typ) or isinstance(header.get(name), bool):
            raise RecordingError(f"{where}: the header's {name!r} is missing or not a {_type_name(typ)}")
    if not isinstance(header["device"].get("path"), str):
        raise RecordingError(f"{where}: the header's device has no QOM 'path'")
    return header


def _type_name(typ: type | tuple[type, ...]) -> str:
    return "number" if isinstance(typ, tuple) else {str: "string", int: "integer", dict: "object"}[typ]


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for every line, the header first (checked).  Raises RecordingError for an
    empty file, a bad header or a corrupt line; a cut-off last line ends the iteration with ``(n, {"kind":
    "cut-off"})``."""
    path = os.fspath(path)
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise RecordingError(f"{path}: line 1: the file is empty (no header); a recording starts with one")
    number, line, complete = first
    if not complete:
        raise RecordingError(f"{path}: line 1: the file is truncated inside its header")
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise RecordingError(f"{path}: line 1: the header is not JSON ({exc})") from None
    yield 1, _check_header(path, header)
    pending: tuple[int, str] | None = None  # a bad line is only corruption if another line follows it
    for number, line, complete in lines:
        if pending is not None:
            raise RecordingError(f"{path}: line {pending[0]}: {pending[1]}")
        if not complete:
            yield number, {"kind": "cut-off"}
            return
        try:
            record = json.loads(line)
        except ValueError as exc:
            pending = (number, f"corrupt record, not JSON ({exc})")
            continue
        if not isinstance(record, dict) or record.get("kind") not in RECORD_KINDS:
            raise RecordingError(f"{path}: line {number}: corrupt record (no known \"kind\": {line[:80]!r})")
        yield number, record
    if pending is not None:  # the very last line is bad but ends in a newline: corrupt, not cut off
        raise RecordingError(f"{path}: line {pending[0]}: {pending[1]}")


def _number(path: str, number: int, record: dict, key: str) -> float:
    value = record.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RecordingError(f"{path}: line {number}: corrupt {record.get('kind')} record: {key!r} is not a number")
    return float(value)


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a recording (see the module docstring for what is an error and what is a crash's cut)."""
    path = os.fspath(path)
    records = iter_records(path)
    _, header = next(records)
    rec = Recording(path=path, header=header, lines=1)
    for number, record in records:
        rec.lines = number
        kind = record["kind"]
        if kind == "cut-off":
            rec.cut_off = True
            rec.lines = number - 1
            break
        if kind == "end":
            rec.end = record
            continue
        vm = _number(path, number, record, "vm")
        if kind == "stats":
            raw = record.get("raw")
            if not isinstance(raw, dict) or not isinstance(raw.get("stats"), dict):
                raise RecordingError(f"{path}: line {number}: corrupt stats record: no guest-stats 'raw'")
            rss = record.get("host-rss")
            rec.reports.append(Report(_number(path, number, record, "t"), vm, raw, bool(record.get("initial")),
                                      rss if isinstance(rss, int) else None))
        elif kind == "event":
            if not isinstance(record.get("event"), dict):
                raise RecordingError(f"{path}: line {number}: corrupt event record: no 'event'")
            rec.events.append(record)
        elif kind == "mark":
            rec.marks.append(record)
        else:
            rec.exchanges += 1
            _host_side(rec, record, _number(path, number, record, "t"))
    return rec


def _host_side(rec: Recording, record: dict, t: float) -> None:
    """The accepted commands a replay re-enacts: ``balloon`` targets and polling-interval qom-sets."""
    if "error" in record:
        return
    args = record.get("arguments") or {}
    if record.get("execute") == "balloon" and isinstance(args.get("value"), int):
        rec.targets.append((t, args["value"]))
    elif (record.get("execute") == "qom-set" and args.get("property") == "guest-stats-polling-interval"
          and args.get("path") == rec.header["device"]["path"] and isinstance(args.get("value"), int)):
        rec.intervals.append((t, args["value"]))


def report_entries(raw: dict) -> tuple[tuple[int, int], ...]:
    """The (tag, value) entries a guest sent for a recorded ``guest-stats``: every stat that is not unset."""
    from ..stats import BY_KEY

    entries = []
    for key, value in raw["stats"].items():
        info = BY_KEY.get(key[5:] if key.startswith("stat-") else key)
        if info is not None and isinstance(value, int) and value != UNSET:
            entries.append((info.tag, value))
    return tuple(sorted(entries))


__all__ = ["FORMAT", "VERSION", "Recording", "Report", "iter_records", "read_recording", "open_for_writing",
           "encode", "report_entries"]
