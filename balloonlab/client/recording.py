"""``lab.record(PATH)``: write everything a lab sees to a recording (the format: client/recordfile.py,
docs/recordings.md).

The recorder hooks the lab where every exchange passes (``BalloonClient.add_tap``, client/connection.py: each QMP
command balloonlab sends, with its reply and round trip, and each event) and subscribes for reports
(``lab.subscribe``), so a recording holds what the lab did, not a second poller's view.  Subscribing starts the
lab's follower, which reads ``guest-stats`` at up to 2 Hz: every report the guest makes is seen once.

Everything is written on balloonlab's loop thread, under a lock shared with ``stop()`` and ``mark()`` (called from
the user's).  Lines are buffered and flushed every ``flush_every`` seconds (1 s): a crash loses at most that much,
and the file still replays up to its last complete line.  A write that fails (a full disk) ends the recording:
the recorder logs it once, keeps the reason in ``error`` with ``state == "failed"`` (what ``%balloon record`` and
``repr`` show: nothing prints from the background thread), and the lab goes on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Hashable
from typing import IO, TYPE_CHECKING, Any, Callable, Literal

from ..errors import BalloonError, QMPError, RecordingError
from .connection import ADVANCE, REPORTS, TRACE
from .recordfile import FORMAT, VERSION, encode, open_for_writing
from .updates import LabUpdate

if TYPE_CHECKING:
    from .balloon import Balloon

log = logging.getLogger("balloonlab.recording")

RecorderState = Literal["recording", "stopped", "failed"]
#: The balloon's QOM properties a header keeps (on the PCI proxy, as QEMU lists them).
DEVICE_PROPERTIES = ("type", "deflate-on-oom", "free-page-reporting", "free-page-hint", "page-poison")


class Recorder:
    """Records one lab until :meth:`stop` or ``lab.close()``.  Make it with ``lab.record(path)``."""

    def __init__(self, lab: "Balloon", path: str | os.PathLike[str], *, description: str = "",
                 flush_every: float = 1.0) -> None:
        self.path = os.fspath(path)
        self.description = description
        self.flush_every = flush_every
        self.state: RecorderState = "recording"
        #: Why recording stopped early (a failed write), else None.
        self.error: str | None = None
        self.reports = 0
        self.records = 0
        self._lock = threading.Lock()
        #: "command args" -> its last reply, and the end of the line that says "the same reply again"
        self._last_reply: dict[Hashable, tuple[dict, str]] = {}
        self._pending: list[str] = []  # encoded lines not yet handed to the file (written once per flush)
        self._last_raw: dict | None = None
        self._vm_pid: int | None = getattr(lab.vm, "pid", None)
        header, running = self._header(lab)
        self.started: float = header["started"]
        self._virtual = header["clock"] == "virtual"
        self._lab_now = self.started  # a virtual clock's time, as far as this recorder has seen it
        self._paused = 0.0
        self._paused_since: float | None = None if running else self.started
        try:
            self._file: IO[str] | None = open_for_writing(self.path)
            self._file.write(encode(header))
            self._file.flush()
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write the recording: {exc.strerror or exc}") from None
        self._flushed = time.monotonic()
        self._detach: list[Callable[[], None]] = [lab._client.add_tap(self)]
        initial = lab.last_stats
        if initial is None:
            with contextlib.suppress(BalloonError):
                initial = lab.stats()
        if initial is not None:
            self._report(initial.raw, self.started, initial=True)
        self._detach.append(lab.subscribe(self._on_update))
        self._release_lab: Callable[[Recorder], None] = lab._forget_recorder

    # The header -------------------------------------------------------------------------------------------------
    def _header(self, lab: "Balloon") -> tuple[dict, bool]:
        path = lab.device_path
        props: dict[str, Any] = {}
        for name in DEVICE_PROPERTIES:
            try:
                props[name] = lab.qmp("qom-get", path=path, property=name)
            except QMPError:
                continue  # an older QEMU without the property: the header says only what QEMU said
        props["guest-stats-polling-interval"] = interval = lab.polling_interval
        status = lab.qmp("query-status")
        virtual = lab.backend == "emulated" and lab._virtual_clock()
        try:
            actual: int | None = lab.actual
        except QMPError:
            actual = None
        from .. import __version__

        header = {
            "format": FORMAT, "version": VERSION, "started": lab._wall_now(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "balloonlab": __version__, "backend": lab.backend,
            "socket": lab.socket_path, "qemu": lab.qemu_version or "unknown", "ram": lab.ram_size,
            "device": {"path": path, "properties": props}, "interval": interval, "actual": actual,
            "clock": "virtual" if virtual else "real", "run-state": status.get("status"),
            "description": self.description,
        }
        return header, bool(status.get("running"))

    # Time -----------------------------------------------------------------------------------------------------
    def _now(self) -> float:
        """The lab's wall clock: the host's, or a virtual clock's as far as its reports and events went."""
        return self._lab_now if self._virtual else time.time()

    def _vm(self, t: float) -> float:
        """VM seconds since recording began: the lab's time minus the time the VM spent paused."""
        paused = self._paused + (t - self._paused_since if self._paused_since is not None else 0.0)
        return round(max(0.0, t - self.started - paused), 6)

    # What the lab tells us (on balloonlab's loop thread) -------------------------------------------------------
    def on_exchange(self, command: str, arguments: dict | None, reply: dict, sent: float, seconds: float) -> None:
        t = self._now() if self._virtual else sent
        if command == ADVANCE and "return" in reply and self._virtual:
            self._lab_now += float((arguments or {}).get("seconds", 0))
        if command == TRACE and "return" in reply:
            # Its reports are written as stats records; the exchanges themselves would be most of the file.
            result = reply["return"]
            reply = {"return": {"next": result.get("next"), "holder": result.get("holder"),
                                "exchanges": len(result.get("exchanges", ()))}, "summarized": True}
        elif command == REPORTS and "return" in reply:
            # The same for a virtual-clock replay's report log (thousands of reports in base64 rows).
            result = reply["return"]
            reply = {"return": {"first": result.get("first"), "next": result.get("next")}, "summarized": True}
        key: Hashable = (command, *arguments.items()) if arguments else command
        try:
            last = self._last_reply.get(key)
        except TypeError:  # an argument that is a list or an object: rare, and the slower key is fine
            key = command + repr(arguments)
            last = self._last_reply.get(key)
        if last is not None and last[0] == reply:  # a dict comparison: far cheaper than encoding the reply again
            # The same reply as this command's previous one (a follower re-reading): the line is the same but for
            # its times, so it is built from the template made with the first one (most lines of a recording).
            self._write_line(f'{{"kind":"qmp","t":{t:.6f},"vm":{self._vm(t)!r},"ms":{seconds * 1000:.3f},{last[1]}')
            return
        record: dict[str, Any] = {"kind": "qmp", "t": round(t, 6), "vm": self._vm(t),
                                  "ms": round(seconds * 1000, 3), "execute": command}
        if arguments:
            record["arguments"] = arguments
        if len(self._last_reply) < 256 or key in self._last_reply:  # a few keys in practice; bounded anyway
            same = {k: v for k, v in record.items() if k in ("execute", "arguments")}
            self._last_reply[key] = (reply, encode({**same, "same": True})[1:])
        record.update(reply)
        self._write(record)

    def on_event(self, event: dict) -> None:
        stamp = event.get("timestamp") or {}
        t = float(stamp.get("seconds", 0)) + float(stamp.get("microseconds", 0)) / 1e6 if stamp else self._now()
        if self._virtual:
            self._lab_now = max(self._lab_now, t)
        name = event.get("event")
        if name == "STOP" and self._paused_since is None:
            self._paused_since = t
        vm = self._vm(t)
        if name == "RESUME" and self._paused_since is not None:
            self._paused += t - self._paused_since
            self._paused_since = None
        self._write({"kind": "event", "t": round(t, 6), "vm": vm, "event": event})

    def _on_update(self, update: LabUpdate) -> None:
        if update.kind == "stats" and update.stats is not None:
            if self._virtual:
                self._lab_now = max(self._lab_now, update.time)
            self._report(update.stats.raw, update.time)
        elif update.kind == "disconnected":
            self.mark(f"disconnected: {update.error}")

    def _report(self, raw: dict, t: float, initial: bool = False) -> None:
        if raw == self._last_raw:
            return
        self._last_raw = raw
        record: dict[str, Any] = {"kind": "stats", "t": round(t, 6), "vm": self._vm(t), "raw": raw}
        if initial:
            record["initial"] = True
        rss = self._host_rss()
        if rss is not None:
            record["host-rss"] = rss
        self.reports += 1
        self._write(record)

    def _host_rss(self) -> int | None:
        """What a launched VM's QEMU holds on the host (VmRSS), the figure free page reporting changes."""
        if self._vm_pid is None:
            return None
        try:
            with open(f"/proc/{self._vm_pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    # Writing ------------------------------------------------------------------------------------------------
    def mark(self, text: str) -> None:
        """A note in the recording at this moment (what the workload does now, what the operator saw)."""
        t = self._now()
        self._write({"kind": "mark", "t": round(t, 6), "vm": self._vm(t), "text": str(text)})

    def _write(self, record: dict) -> None:
        self._write_line(encode(record))

    def _write_line(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                return
            self._pending.append(line)
            self.records += 1
            now = time.monotonic()
            if now - self._flushed >= self.flush_every:
                self._flushed = now
                self._flush()

    def _flush(self) -> None:
        """Under the lock: hand the pending lines to the file in one write (one compression call for a .gz, not
        one per line: most of what recording costs) and flush it."""
        f = self._file
        assert f is not None
        lines, self._pending = self._pending, []
        try:
            f.write("".join(lines))
            f.flush()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """Under the lock: stop recording for good, say why once, let the lab go on."""
        self.state = "failed"
        self.error = (f"recording to {self.path} stopped after {self.records} records: "
                      f"{exc.strerror or exc}; the lab goes on without it")
        log.error("balloonlab: %s", self.error)
        f, self._file = self._file, None
        with contextlib.suppress(Exception):  # closing writes the gzip trailer: the disk is still full
            f.close()  # type: ignore[union-attr]
        self._unhook()

    def _unhook(self) -> None:
        detach, self._detach = self._detach, []
        for undo in detach:
            undo()

    def stop(self, reason: str = "stopped") -> None:
        """Stop recording and close the file (idempotent)."""
        t = self._now()
        self._unhook()
        with self._lock:
            f, self._file = self._file, None
            if f is None:
                return
            self._pending.append(encode({"kind": "end", "t": round(t, 6), "vm": self._vm(t), "reason": reason}))
            try:
                f.write("".join(self._pending))
                f.close()
                self.state = "stopped"
            except OSError as exc:
                self._file = f
                self._fail(exc)
            self._pending = []
        self._release_lab(self)

    @property
    def recording(self) -> bool:
        return self.state == "recording"

    @property
    def summary(self) -> str:
        """One line for the front ends (``%balloon record``, ``%balloon info``): state, file, counts or error."""
        if self.state == "failed":
            return f"recording FAILED: {self.error}"
        return f"{self.state} {self.path}: {self.reports} reports, {self.records} records"

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Recorder {self.summary}>"


__all__ = ["Recorder", "RecorderState"]
