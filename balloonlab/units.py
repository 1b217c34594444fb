"""Sizes and durations as people write them ("512M", "1.5G", "30s", "24h"), and as people read them.

QEMU's own size suffixes are binary (``-m 512M`` is 512 MiB), and so are ours: K, M, G, T mean KiB, MiB, GiB,
TiB; a bare number is bytes (``268435456``), except where a caller says otherwise (``-m 512`` means MiB, as in
qemu-system).
"""

from __future__ import annotations

import math
import re

_SIZE_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION_UNIT = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "": 1}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|sec|min|[smhd]?)", re.IGNORECASE)


def parse_size(text: str | int, default_unit: str = "") -> int:
    """Bytes in a size such as ``"512M"``, ``"1.5G"``, ``"256MiB"``, ``268435456``.

    ``default_unit`` applies to a bare number (qemu-system's ``-m 512`` is ``default_unit="M"``).
    Raises ``ValueError`` with a message that names the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text * _SIZE_SUFFIX[default_unit.lower()]
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (write e.g. 256M, 1.5G, 268435456)")
    number, suffix = m.groups()
    unit = _SIZE_SUFFIX[(suffix or default_unit).lower()]
    value = float(number) * unit
    if value != int(value):
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"30s"``, ``"1.5m"``, ``"24h"``, ``"1h30m"``, ``"250ms"`` or ``30``."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0 or not math.isfinite(text):
            raise ValueError(f"a duration must be a finite number of seconds >= 0: {text!r}")
        return float(text)
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos and s[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2).lower()]
        pos = m.end()
    if not s or s[pos:].strip():
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 1.5m, 24h, 1h30m)")
    return total


def format_size(n: int | None) -> str:
    """A byte count for people: ``format_size(268435456) == "256.0 MiB"``."""
    if n is None:
        return "unset"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Seconds for people: ``"45 s"``, ``"3 min 20 s"``, ``"2 h 5 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 or seconds == 0 else f"{seconds * 1000:.0f} ms"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
