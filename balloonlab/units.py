"""Sizes and durations as people write them ("512M", "1.5G", "30s", "24h"), and as people read them.

QEMU's own size suffixes are binary (``-m 512M`` is 512 MiB), and so are ours: K, M, G, T mean KiB, MiB, GiB,
TiB.

The bare-number rule, the same in the Python API, the ``%balloon`` magics and ``balloonlab launch``: **a bare
number is bytes**, as on the QMP wire (``balloon`` takes bytes, ``query-balloon`` answers bytes, so
``lab.set_target(lab.actual // 2)`` just works).  The one exception is qemu-system's own ``-m`` option, which
``balloonlab emulate -m 512`` and ``balloonlab launch -m 512`` spell as qemu-system does (MiB).  A guest size
below :data:`MIN_GUEST_MEMORY` is refused with a hint, because it is almost always a forgotten suffix
(``512`` bytes: did you mean ``'512M'``?), and a guest asked to balloon down to it would lose nearly everything
without a word.

Every value a person types is checked here, once, with one wording: :func:`parse_guest_size` (guest RAM and
balloon targets), :func:`parse_interval` (the stats polling interval) and :func:`parse_duration`.  They raise
:class:`~balloonlab.errors.InvalidValueError` (also a ``ValueError``) whose message says what is wrong and, in
brackets, what to write instead; the magics put ``%balloon SUBCOMMAND:`` in front of the same words.
"""

from __future__ import annotations

import math
import re

from .errors import InvalidValueError

#: The smallest guest RAM or balloon target balloonlab accepts: no guest (the tiny Linux guest boots in about
#: 40 MiB) keeps running below it, and a smaller number is nearly always a size written without its suffix.
MIN_GUEST_MEMORY = 16 << 20
#: QEMU keeps guest-stats-polling-interval in a uint32 ("timer value is too big" above this).
MAX_INTERVAL = 2**32 - 1

_SIZE_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION_UNIT = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "": 1}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|sec|min|[smhd]?)", re.IGNORECASE)


def parse_size(text: str | int, default_unit: str = "") -> int:
    """Bytes in a size such as ``"512M"``, ``"1.5G"``, ``"256MiB"``, ``268435456``.

    ``default_unit`` applies to a bare number (qemu-system's ``-m 512`` is ``default_unit="M"``).
    Raises :class:`~balloonlab.errors.InvalidValueError` with a message that names the accepted forms.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise InvalidValueError(f"not a size: {text!r} (write e.g. 256M, 1.5G or 268435456 bytes)")
    if isinstance(text, int):
        if text < 0:
            raise InvalidValueError(f"a size cannot be negative: {text} (write e.g. 256M)")
        return text * _SIZE_SUFFIX[default_unit.lower()]
    negative = text.strip().startswith("-") and _SIZE_RE.match(text.strip()[1:])
    if negative:
        raise InvalidValueError(f"a size cannot be negative: {text.strip()} (write e.g. 256M)")
    m = _SIZE_RE.match(text)
    if not m:
        raise InvalidValueError(f"not a size: {text!r} (write e.g. 256M, 1.5G or 268435456 bytes)")
    number, suffix = m.groups()
    unit = _SIZE_SUFFIX[(suffix or default_unit).lower()]
    value = float(number) * unit
    if value != int(value):
        raise InvalidValueError(f"not a whole number of bytes: {text!r} (write e.g. 1536M for 1.5G)")
    return int(value)


def parse_guest_size(value: str | int, what: str = "target", default_unit: str = "") -> int:
    """Bytes of guest RAM or of a balloon target (``what`` names it in the message), refused when no guest could
    live in it.

    A bare number is bytes (``default_unit`` is ``"M"`` only for qemu-system's ``-m``).  0 and negative sizes
    are refused before anything is sent, with the same words wherever they were typed; QEMU would answer
    ``balloon 0`` with ``Parameter 'target' expects a size``, and ``lab.qmp("balloon", value=0)`` still sends it.
    """
    shown = str(value).strip()
    if not isinstance(value, bool) and ((isinstance(value, int) and value < 0)
                                        or (isinstance(value, str) and shown.startswith("-"))):
        raise InvalidValueError(f"{what} {shown} is negative: a guest needs more than 0 bytes (write e.g. 256M)")
    size = parse_size(value, default_unit)
    bare = isinstance(value, int) or _SIZE_RE.match(value).group(2) == ""  # type: ignore[union-attr]
    if size == 0:
        raise InvalidValueError(f"{what} {shown} is not a size: a guest needs more than 0 bytes (write e.g. 256M)")
    if size < MIN_GUEST_MEMORY:
        if bare and not default_unit:
            raise InvalidValueError(
                f"{what} {shown} is {shown} bytes, less than any guest can keep: did you mean '{shown}M'? "
                f"(a bare number is bytes; write e.g. {shown}M)")
        raise InvalidValueError(
            f"{what} {shown} is {format_size(size)}, less than any guest can keep (at least "
            f"{format_size(MIN_GUEST_MEMORY)}; write e.g. 256M)")
    return size


def parse_interval(value: str | int | float) -> int:
    """Whole seconds between two stats requests, as QEMU keeps them (0 turns polling off): ``2``, ``"2"``,
    ``"30s"``, ``"1m"``.

    A fractional, negative, too large or non-numeric value is refused before anything is sent (QEMU would
    answer a fraction with a type error and -1 with "timer value must be greater than zero");
    ``lab.qmp("qom-set", ...)`` still sends whatever it is given.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidValueError(
            f"not an interval: {value!r} (write whole seconds such as 2, 30s or 1m; 0 turns polling off)")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        seconds: float = int(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except InvalidValueError:
            neg = value.strip().startswith("-")
            if not neg:
                raise InvalidValueError(
                    f"not an interval: {value!r} (write whole seconds such as 2, 30s or 1m; 0 turns polling "
                    "off)") from None
            seconds = -1
    else:
        seconds = value
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise InvalidValueError(
            f"not an interval: {value!r} (write whole seconds such as 2, 30s or 1m; 0 turns polling off)")
    if seconds < 0:
        raise InvalidValueError(f"the interval cannot be negative: {value!r} (0 turns polling off)")
    if seconds != int(seconds):
        raise InvalidValueError(f"QEMU polls in whole seconds: {value!r} (write e.g. 1 or 2)")
    if seconds > MAX_INTERVAL:
        raise InvalidValueError(f"QEMU's interval is at most {MAX_INTERVAL} s: {value!r} (write e.g. 1h)")
    return int(seconds)


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"30s"``, ``"1.5m"``, ``"24h"``, ``"1h30m"``, ``"250ms"`` or ``30``."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise InvalidValueError(f"not a duration: {text!r} (write e.g. 30s, 1.5m, 24h, 1h30m)")
    if isinstance(text, (int, float)):
        if text < 0 or not math.isfinite(text):
            raise InvalidValueError(f"a duration must be a finite number of seconds >= 0: {text!r} (write e.g. 30s)")
        return float(text)
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos and s[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2).lower()]
        pos = m.end()
    if not s or s[pos:].strip():
        raise InvalidValueError(f"not a duration: {text!r} (write e.g. 30s, 1.5m, 24h, 1h30m)")
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
