"""``%balloon info``: one snapshot of what a lab is and how its balloon is doing, for eyes and for code.

A value object rather than printed text so that ``info = %balloon info; info.actual`` works and a notebook shows
a table while a terminal shows aligned lines.  Everything is read when it is made; rendering has no effects.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from ..units import format_size

__all__ = ["LabInfo"]


@dataclass(frozen=True)
class LabInfo:
    """What ``%balloon info`` shows."""

    backend: str  #: "emulated", "live" or "connected"
    socket_path: str  #: the QMP unix socket (qmp-shell can attach to it too)
    device_path: str  #: QOM path of the balloon device
    actual: int  #: query-balloon's actual, bytes
    ram_size: int  #: the VM's RAM, bytes
    polling_interval: int  #: guest-stats-polling-interval, seconds (0 = off)
    verdict: str  #: the doctor's short code ("healthy", "polling-off", ...)
    severity: str  #: "ok", "warning" or "error"
    message: str  #: the doctor's words
    recording: str = ""  #: what records this lab (a failed recorder says why), one line each; "" if nothing

    @classmethod
    def of(cls, lab: Any) -> "LabInfo":
        diagnosis = lab.doctor()
        return cls(
            backend=lab.backend,
            socket_path=lab.socket_path,
            device_path=lab.device_path,
            actual=lab.actual,
            ram_size=lab.ram_size,
            polling_interval=lab.polling_interval,
            verdict=diagnosis.verdict,
            severity=diagnosis.severity,
            message=diagnosis.message,
            recording="\n".join(r.summary for r in lab.recorders),
        )

    def rows(self) -> list[tuple[str, str]]:
        interval = "off (0)" if self.polling_interval == 0 else f"{self.polling_interval} s"
        return [
            ("backend", self.backend),
            ("socket", self.socket_path),
            ("device", self.device_path),
            ("actual", f"{self.actual} ({format_size(self.actual)})"),
            ("RAM", f"{self.ram_size} ({format_size(self.ram_size)})"),
            ("polling", interval),
            ("doctor", f"[{self.severity}] {self.verdict}: {self.message}"),
            *(("recording", line) for line in self.recording.splitlines()),
        ]

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        p.text("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))

    def _repr_html_(self) -> str:
        e = html.escape
        body = "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>{e(v)}</td></tr>"
                       for k, v in self.rows())
        return f"<table class='balloonlab-info'>{body}</table>"
