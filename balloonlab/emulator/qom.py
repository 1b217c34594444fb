"""A small QOM (QEMU Object Model) tree: objects, their properties, path resolution, and qom-list/get/set.

Only what the balloon needs is modelled, but with QEMU's rules and error strings: absolute paths
(``/machine/peripheral/balloon0``), partial paths (``balloon0``, resolved when unique), ``child<T>`` and
``link<T>`` properties, alias properties (the PCI proxy forwards ``guest-stats`` to its ``virtio-backend`` child,
so errors name ``virtio-balloon-device``), read-only properties, and static ``-device`` properties that refuse
changes once the device is realized.

:func:`qdict` orders a result's keys as QEMU's QDict iterates them (tdb_hash, 512 buckets, ascending bucket,
newest first within a bucket), so replies look byte-for-byte like QEMU's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from ..errors import QMPError
from .jsonstream import qdict_ordered

@lru_cache(maxsize=512)
def _qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    # The emulator's own replies use a few fixed key sets: remember their order (bounded, so never a leak).
    return tuple(qdict_ordered(dict.fromkeys(keys)))


def qdict(pairs: Iterable[tuple[str, Any]]) -> dict:
    """A dict built from ``pairs`` (in QEMU's insertion order), reordered as QEMU would print it."""
    d = dict(pairs)
    return {k: d[k] for k in _qdict_order(tuple(d))}


def type_error(name: str, expected: str) -> QMPError:
    """QEMU's input-visitor type error."""
    return QMPError("GenericError", f"Invalid parameter type for '{name}', expected: {expected}")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_int64(value: Any) -> bool:
    """True for a JSON integer QEMU's input visitor takes as ``int``: bools, floats and out-of-range numbers are
    refused (with :func:`type_error`'s "expected: integer")."""
    return not isinstance(value, bool) and isinstance(value, int) and INT64_MIN <= value <= INT64_MAX


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise type_error(name, "boolean")
    return value


class Property:
    """One QOM property.  ``getter`` returns the JSON value; ``setter`` takes the JSON value (None: read-only).

    ``static`` marks a ``-device`` property: settable only before the device is realized (never, here).
    """

    __slots__ = ("name", "type", "getter", "setter", "static")

    def __init__(self, name: str, type: str, getter: Callable[[], Any] | None,
                 setter: Callable[[Any], None] | None = None, static: bool = False) -> None:
        self.name = name
        self.type = type
        self.getter = getter
        self.setter = setter
        self.static = static


class QObject:
    """A QOM object: a type name, ordered properties, and children (``child<T>`` properties)."""

    def __init__(self, type_name: str, props: bool = True) -> None:
        self.type_name = type_name
        self.props: dict[str, Property] = {}
        self.aliases: dict[str, tuple[QObject, str]] = {}
        self.children: dict[str, QObject] = {}
        self.parent: QObject | None = None
        self.name = ""
        self.device_id: str | None = None  #: the -device id, for QEMU's after-realize message
        if props:  # False: the caller adds "type" itself, where the object's listing has it
            self.add("type", "string", lambda: self.type_name)

    def add(self, name: str, type: str, getter: Callable[[], Any] | None, setter: Callable[[Any], None] | None = None,
            static: bool = False) -> None:
        self.props[name] = Property(name, type, getter, setter, static)

    def add_alias(self, name: str, target: QObject, target_name: str) -> None:
        """``object_property_add_alias``: same type, reads and writes go to the target (and so do its errors)."""
        self.aliases[name] = (target, target_name)
        tprop = target.props[target_name]
        self.props[name] = Property(name, tprop.type, tprop.getter, tprop.setter, tprop.static)

    def add_child(self, name: str, child: QObject) -> QObject:
        child.parent = self
        child.name = name
        self.children[name] = child
        self.props[name] = Property(name, f"child<{child.type_name}>", lambda: child.path)
        return child

    @property
    def path(self) -> str:
        if self.parent is None:
            return "/"
        parent = self.parent.path
        return (parent if parent != "/" else "") + "/" + self.name

    def walk(self) -> Iterable[QObject]:
        yield self
        for child in self.children.values():
            yield from child.walk()

    # -- qom-list / qom-get / qom-set ----------------------------------------------------------------------------
    def list_properties(self) -> list[dict]:
        return [qdict((("name", p.name), ("type", p.type))) for p in self.props.values()]

    def _find(self, name: str) -> tuple[QObject, Property]:
        if name in self.aliases:
            target, tname = self.aliases[name]
            return target._find(tname)
        prop = self.props.get(name)
        if prop is None:
            raise QMPError("GenericError", f"Property '{self.type_name}.{name}' not found")
        return self, prop

    def get(self, name: str) -> Any:
        owner, prop = self._find(name)
        if prop.getter is None:
            raise QMPError("GenericError", f"Property '{owner.type_name}.{prop.name}' is not readable")
        return prop.getter()

    def set(self, name: str, value: Any) -> None:
        owner, prop = self._find(name)
        if prop.static and prop.type.startswith("link<"):
            # QEMU's link-property check prints the id with %s: an anonymous device (the backend) is '(null)'
            raise QMPError("GenericError", f"Attempt to set link property '{prop.name}' on device "
                                           f"'{owner.device_id or '(null)'}' (type '{owner.type_name}') "
                                           f"after it was realized")
        if prop.static:
            who = (f"device '{owner.device_id}'" if owner.device_id else "anonymous device")
            raise QMPError("GenericError", f"Attempt to set property '{prop.name}' on {who} "
                                           f"(type '{owner.type_name}') after it was realized")
        if prop.setter is None:
            raise QMPError("GenericError", f"Property '{owner.type_name}.{prop.name}' is not writable")
        prop.setter(value)


def container() -> QObject:
    return QObject("container")


def resolve(root: QObject, path: str, report_ambiguous: bool = True) -> QObject:
    """``object_resolve_path``: an absolute path, or a partial one matched as a unique suffix.

    A partial path that matches several objects (the empty path matches them all) is GenericError "Path '...'
    is ambiguous" for qom-list; qom-get and qom-set (``report_ambiguous=False``) say DeviceNotFound, as QEMU."""
    if path.startswith("/"):
        node = root
        for part in path.split("/"):
            if not part:
                continue
            node = node.children.get(part)  # type: ignore[assignment]
            if node is None:
                break
        if node is not None:
            return node
        raise QMPError("DeviceNotFound", f"Device '{path}' not found")
    parts = [p for p in path.split("/") if p]
    matches = []
    for node in root.walk():
        chain: list[str] = []
        cur: QObject | None = node
        while cur is not None and cur.parent is not None and len(chain) < len(parts):
            chain.append(cur.name)
            cur = cur.parent
        if chain[::-1] == parts:
            matches.append(node)
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1 and report_ambiguous:
        raise QMPError("GenericError", f"Path '{path}' is ambiguous")
    raise QMPError("DeviceNotFound", f"Device '{path}' not found")
