"""``balloonlab.fleet(uri_or_uris)``: every running libvirt domain with a balloon, on one host or several.

A fleet has the emulated host's shape (``balloonlab.emulate_host``): ``vms`` (one ``Balloon`` lab per VM, libvirt
backend), ``fleet["web1"]``, ``usage()`` and ``close()``, so the fleet panel and the policy lab take either.  Several
hosts are just several libvirt URIs (``qemu+ssh://a/system``): libvirt's remote transport is how balloonlab grows
past one machine.  Every lab of a host shares that host's one connection (``client/libvirt_host.py``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import difflib
import time
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar

from . import loop as _loop
from .balloon import Balloon
from .host import HostUsage, subscribe_labs
from .libvirt_client import LibvirtClient
from .libvirt_host import LibvirtHost, require_libvirt
from ..errors import BalloonError, InvalidValueError, UnknownVMError

T = TypeVar("T")


class Fleet:
    """The balloons of every running domain on some libvirt hosts.  Build it with :func:`fleet`."""

    def __init__(self, hosts: list[LibvirtHost], *, history: bool = False, timeout: float = 10.0) -> None:
        self.hosts = hosts
        self.timeout = timeout
        self.history = history
        self._closed = False
        self.vms: list[Balloon] = []
        #: Domains found but left out, and why (no balloon, not running): ``{"host uri/name": reason}``.
        self.skipped: dict[str, str] = {}
        try:
            self.refresh()
        except BaseException:
            for lab in self.vms:
                lab.close()
            raise

    def refresh(self) -> None:
        """Look for domains started since (labs that still work are kept; domains that went away are dropped).

        A dropped lab is closed (its listeners and follower go with it), so a domain started again under the same
        name is found anew.  Every libvirt call goes through the host's threads, with the fleet's timeout and
        libvirt's errors in balloonlab's terms; a host that cannot be asked is listed in ``skipped``."""
        libvirt = require_libvirt()
        keep = [lab for lab in self.vms if not lab.closed and lab.connected]
        for lab in self.vms:
            if lab not in keep:
                lab.close()
        self.vms = keep
        known = {(lab._client.host, lab._client.domain_name) for lab in keep}  # type: ignore[attr-defined]
        self.skipped = {}
        for host in self.hosts:
            try:
                if not host.alive:
                    host.reopen()
                found = self._run(host, host.conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            except BalloonError as exc:
                self.skipped[host.uri] = str(exc)
                continue
            for dom in found:
                try:
                    name = self._run(host, dom.name)
                    if (host, name) in known:
                        continue
                    xml = self._run(host, dom.XMLDesc, 0, domain=name)
                except BalloonError as exc:  # gone between the listing and the look (or the host went quiet)
                    self.skipped[f"{host.uri}/{dom.UUIDString()}"] = str(exc)
                    continue
                balloon = ET.fromstring(xml).find("./devices/memballoon")
                if balloon is None or balloon.get("model") in (None, "none"):
                    self.skipped[f"{host.uri}/{name}"] = "no balloon device"
                    continue
                client = LibvirtClient(host, name, owns_host=False, command_timeout=self.timeout)
                try:
                    self.vms.append(Balloon(backend="libvirt", history=self.history, timeout=self.timeout,
                                            client=client, name=name))
                except BalloonError as exc:
                    self.skipped[f"{host.uri}/{name}"] = str(exc)

    def _run(self, host: LibvirtHost, fn: Callable[..., T], *args: Any, domain: str | None = None) -> T:
        """One blocking libvirt call, as the labs make theirs (``LibvirtHost.call``): bounded, errors translated."""
        return _loop.run(host.call(fn, *args, domain=domain, timeout=self.timeout), self.timeout + 5.0)

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.vms]

    def __getitem__(self, name: str) -> Balloon:
        matches = [lab for lab in self.vms if lab.name == name]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            near = difflib.get_close_matches(str(name), self.names, n=1)
            raise UnknownVMError(f"no VM named {name!r} in this fleet (it has {', '.join(self.names) or 'none'})"
                                 + (f"; did you mean {near[0]!r}?" if near else ""))
        raise UnknownVMError(f"{len(matches)} VMs are called {name!r} (on different hosts); pick one from "
                             "fleet.vms")

    def __iter__(self) -> Iterator[Balloon]:
        return iter(self.vms)

    def __len__(self) -> int:
        return len(self.vms)

    def usage(self) -> HostUsage:
        """The hosts' memory as the emulated host reports its own (``client/host.py``'s HostUsage): ``total`` and
        ``free`` from libvirt's node memory stats (KiB made bytes), ``rss`` each VM's by name and ``used`` their sum.
        Those stats carry no swap: ``swap_used`` and ``swap_total`` are 0 and ``swapped`` is empty."""
        total = free = 0
        for host in self.hosts:
            node = host.node_memory()
            total += node["total"] * 1024
            free += node["free"] * 1024
        rss = {lab.name: lab.host_rss for lab in self.vms}
        return HostUsage(total=total, used=sum(rss.values()), free=free, swap_used=0, swap_total=0, rss=rss)

    # The emulated host's surface, so the fleet panel takes a fleet as it takes a host --------------------------
    @property
    def memory(self) -> int:
        """Bytes of RAM over all the fleet's hosts."""
        return sum(host.node_memory()["total"] * 1024 for host in self.hosts)

    @property
    def clock(self) -> Literal["real"]:
        return "real"  # real hosts: time goes on by itself

    def wall_time(self) -> float:
        """Now: every VM's last-update is on its host's wall clock."""
        return time.time()

    @property
    def closed(self) -> bool:
        return self._closed

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def subscribe_vms(self, callback: Callable[[str, Any], None]) -> Callable[[], None]:
        """``callback(name, update)`` for every VM's lab updates (see ``Balloon.subscribe``); returns unsubscribe."""
        return subscribe_labs(self.vms, callback)

    def close(self) -> None:
        """Close every lab, then every host connection.  Idempotent."""
        self._closed = True
        for lab in self.vms:
            lab.close()
        for host in self.hosts:
            host.close()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        vms, hosts = len(self.vms), len(self.hosts)
        return (f"<Fleet {vms} VM{'s' if vms != 1 else ''} on {hosts} host{'s' if hosts != 1 else ''}: "
                f"{', '.join(self.names)}>")


def fleet(uris: str | Sequence[str], *, history: bool = False, timeout: float = 10.0) -> Fleet:
    """Every running domain with a balloon on these libvirt hosts (one URI or a list: ``qemu+ssh://a/system``)."""
    uri_list = [uris] if isinstance(uris, str) else list(uris)
    if not uri_list:
        raise InvalidValueError("fleet() needs at least one libvirt URI, e.g. 'qemu:///system'")
    hosts: list[LibvirtHost] = []
    try:
        for uri in uri_list:
            hosts.append(LibvirtHost.open(uri, timeout=timeout))
        return Fleet(hosts, history=history, timeout=timeout)
    except BaseException:
        for host in hosts:
            host.close()
        raise


__all__ = ["Fleet", "fleet"]
