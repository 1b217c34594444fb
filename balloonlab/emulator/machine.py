"""The emulated VM below the QMP wire: run state, QOM tree, balloon device, guest, events, and every command.

``Machine.execute(command, arguments)`` is what the QMP server calls for each command after negotiation.  It
checks the arguments as QEMU's marshallers do (commands.py) and answers with QEMU's values, key order (see
qom.qdict) and error strings for the version profile in ``MachineConfig.qemu_version``.

Events go to listeners as the exact wire dicts (``{"timestamp": {...}, "event": ..., "data"?: ...}``), with
``BALLOON_CHANGE`` rate-limited as QEMU's monitor does it (events.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import EmulatorOptionError, QMPError
from ..qapi import RunState
from .clock import NS, VM, Clock
from .commands import COMMANDS, check_arguments, lookup
from .config import MachineConfig
from .device import POLL_PROPERTY, VirtioBalloon
from .events import MonitorEvents
from .guests import BOOT_DELAY_NS, default_kernel, make_guest
from .memory import KERNELS, QEMU_OVERHEAD
from .qom import QObject, check_bool, container, qdict, resolve
from .qomdata import BACKEND, MACHINE, PCI_PROXY, ROOT_CHILDREN
from .virtio_qmp import not_a_virtio_device, virtio_list, virtio_status

NO_BALLOON = "No balloon device has been activated"
#: VM time after a reset at which the firmware (SeaBIOS on a warm boot) resets the machine again.  Real QEMU 7.2
#: with the tiny guest sent one or two RESET {"guest": true, "reason": "guest-reset"} 40-80 ms after each reset
#: (timing-dependent); the emulator sends one, 60 ms after.
FIRMWARE_RESETS_NS = (60_000_000,)


#: The longest one x-balloonlab-advance may run (31 days: about 30 s of CPU at 1 s polling).
MAX_ADVANCE_S = 31 * 86400


@dataclass(frozen=True)
class VersionProfile:
    """What a QEMU version says about itself and where it differs."""

    version: str
    major: int
    minor: int
    micro: int
    package: str

    @property
    def tuple(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def machine_type(self) -> str:
        return f"pc-i440fx-{self.major}.{self.minor}-machine"


PROFILES = {
    "7.2": VersionProfile("7.2", 7, 2, 22, "Debian 1:7.2+dfsg-7+deb12u18+b3"),  # observed (spec A)
    "9.2": VersionProfile("9.2", 9, 2, 1, "Debian 1:9.2.1+ds-1"),  # chosen: a plausible Debian build
    "10.0": VersionProfile("10.0", 10, 0, 13, "Debian 1:10.0.13+ds-0+deb13u1"),  # observed (spec A2)
}


def _set_realized(value: Any) -> None:
    check_bool("realized", value)
    if not value:
        raise QMPError("GenericError", "balloonlab emulator: unrealizing (unplugging) a device is not modelled")


def _constant(value: Any) -> Callable[[], Any]:
    """A getter that always answers ``value`` (a fresh closure per property, not a loop variable's last value)."""
    return lambda: value


def _add_row(obj: QObject, name: str, typ: str, value: Any, kind: str, getter: Callable[[], Any] | None) -> None:
    """One qomdata row as a property of ``obj``."""
    if getter is None and kind != "unreadable":
        def getter(v: Any = value) -> Any:
            return copy.deepcopy(v)
    if kind == "static":
        obj.add(name, typ, getter, static=True)
    elif kind == "runtime" and name == "realized":
        obj.add(name, typ, getter, _set_realized)
    elif kind == "unreadable":
        obj.add(name, typ, None)
    else:  # "ro", "runtime", "link"
        obj.add(name, typ, getter)


class Machine:
    """One emulated VM (see the module docstring and docs/emulator.md)."""

    def __init__(self, config: MachineConfig, clock: Clock) -> None:
        if config.qemu_version not in PROFILES:
            raise EmulatorOptionError(f"unknown QEMU version profile {config.qemu_version!r} "
                                      f"(choose from {', '.join(PROFILES)})")
        if config.ram_size <= 0 or config.ram_size % 4096:
            raise EmulatorOptionError(f"-m: RAM size must be a positive multiple of 4 KiB, not {config.ram_size}")
        if len(config.balloons) > 1:
            raise EmulatorOptionError("-device virtio-balloon-pci: Only one balloon device is supported")
        for spec in config.balloons:
            try:
                spec.check()
            except EmulatorOptionError as exc:
                raise EmulatorOptionError(f"-device {spec.driver}: {exc}") from None
        self.config = config
        self.clock = clock
        self.profile = PROFILES[config.qemu_version]
        self.version = self.profile.tuple
        self.run_state: RunState = "prelaunch"
        self.on_quit: Callable[[], None] | None = None
        self.events = MonitorEvents(clock)
        self.device: VirtioBalloon | None = None
        self.device_path: str | None = None
        self.root = self._build_tree()
        kernel = config.guest_kernel or default_kernel(self.version)
        if kernel not in KERNELS:
            raise EmulatorOptionError(f"unknown guest kernel {kernel!r} (choose from {', '.join(KERNELS)})")
        self._firmware_timer = clock.new_timer(VM, self._firmware_reset)
        self._firmware_base = 0
        self._firmware_left: list[int] = []
        try:
            boot_ns = BOOT_DELAY_NS if config.boot_delay is None else round(config.boot_delay * NS)
            if boot_ns < 0:
                raise ValueError(f"the guest's boot delay cannot be negative: {config.boot_delay}")
            self.guest = make_guest(config.guest, clock, self.device, config.ram_size, seed=config.seed,
                                    kernel=kernel, boot_delay_ns=boot_ns, workload=config.workload,
                                    replay=config.replay)
        except ValueError as e:
            raise EmulatorOptionError(str(e)) from None
        self.guest.on_reboot = self._guest_reboot
        #: Bytes of this VM's memory the host has swapped out (set by the emulated host, emulator/host.py).
        self.host_swapped = 0
        #: Guest RAM the host backed (in RAM or swap) when it last looked (emulator/host.py).
        self.host_backed = 0
        #: Set by a host of many VMs: brings its swap accounting to the present before an RSS is read.
        self.account_host: Callable[[], None] | None = None
        #: ``x-balloonlab-advance`` moves this clock; a host of many VMs replaces it to move them all together.
        self.advance: Callable[[float], None] = clock.advance

    # -- construction ----------------------------------------------------------------------------------------------
    def _build_tree(self) -> QObject:
        """The QOM tree, with the property listings a real QEMU 7.2 shows (qomdata.py)."""
        root = container()
        for name, typ in ROOT_CHILDREN:
            root.add_child(name, QObject(typ) if typ else self._build_machine())
        machine = root.children["machine"]
        anon = machine.children["peripheral-anon"]
        for spec in self.config.balloons:
            proxy = self._build_balloon(spec)
            if spec.legacy:
                # -balloon virtio as QEMU's stats doc shows it: one anonymous device before the balloon.
                other = QObject("virtio-serial-pci")
                other.add("parent_bus", "link<bus>", lambda: "/machine/i440fx/pci.0")
                for name, prop_type, value, _ in PCI_PROXY[2:5]:
                    other.add(name, str(prop_type), _constant(value))
                anon.add_child("device[0]", other)
                anon.add_child("device[1]", proxy)
            elif spec.id:
                proxy.device_id = spec.id
                machine.children["peripheral"].add_child(spec.id, proxy)
            else:
                anon.add_child(f"device[{len(anon.children)}]", proxy)
            self.device_path = proxy.path
        return root

    def _build_machine(self) -> QObject:
        machine = QObject(self.profile.machine_type, props=False)
        dynamic = {"memory": lambda: {"size": self.config.ram_size}, "rtc-time": self._rtc_time,
                   "type": lambda: machine.type_name}
        for name, typ, value, kind in MACHINE:
            if kind == "child":
                child = machine.add_child(name, QObject(str(value)))
                if name == "i440fx":
                    child.add_child("pci.0", QObject("PCI"))
            else:
                _add_row(machine, name, typ, value, kind, dynamic.get(name))
        return machine

    def _rtc_time(self) -> dict:
        t = time.gmtime(self.clock.wall_time())
        return qdict((("tm_year", t.tm_year - 1900), ("tm_mon", t.tm_mon - 1), ("tm_mday", t.tm_mday),
                      ("tm_hour", t.tm_hour), ("tm_min", t.tm_min), ("tm_sec", t.tm_sec)))

    def _build_balloon(self, spec) -> QObject:
        dev = VirtioBalloon(self.clock, self.config.ram_size, self.version, deflate_on_oom=spec.deflate_on_oom,
                            free_page_hint=spec.free_page_hint, free_page_reporting=spec.free_page_reporting,
                            page_poison=spec.page_poison, emit=self.emit)
        self.device = dev
        if spec.polling_interval:
            dev.set_poll_interval(spec.polling_interval)
        proxy = QObject(spec.driver, props=False)
        backend = QObject("virtio-balloon-device", props=False)
        spec_values: dict[str, Any] = {"deflate-on-oom": spec.deflate_on_oom, "free-page-hint": spec.free_page_hint,
                       "free-page-reporting": spec.free_page_reporting, "page-poison": spec.page_poison}
        device_props = {"guest-stats": (dev.guest_stats, None),
                        POLL_PROPERTY: (lambda: dev.poll_interval, dev.set_poll_interval)}
        for name, typ, value, kind in BACKEND:
            if kind == "device":
                getter, setter = device_props[name]
                backend.add(name, typ, getter, setter)
            elif name == "parent_bus":
                backend.add(name, typ, lambda: proxy.path + "/virtio-bus")
            else:
                _add_row(backend, name, typ, spec_values.get(name, value), kind,
                         (lambda: backend.type_name) if name == "type" else None)
        for name, proxy_type, value, kind in PCI_PROXY:
            if kind == "alias":
                proxy.add_alias(name, backend, name)
            elif kind == "child" and name == "virtio-bus":
                bus = proxy.add_child(name, QObject(str(value)))
                bus.add("realized", "bool", lambda: True, _set_realized)
                bus.add("child[0]", "link<virtio-balloon-device>", lambda: backend.path)
                bus.add("hotplug-handler", "link<hotplug-handler>", lambda: "")
            elif kind == "child":
                proxy.add_child(name, backend)
            elif kind == "mr":
                proxy.add_child(name, QObject("memory-region"))
            else:
                _add_row(proxy, name, str(proxy_type), value, kind,
                         (lambda: proxy.type_name) if name == "type" else None)
        return proxy

    # -- power and run state ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Power on.  With ``-S`` the VM waits in "prelaunch" until ``cont``; the guest boots when it runs
        (on a virtual clock without -S, start() itself advances through the boot)."""
        self.guest.power_on()
        if not self.config.start_paused:
            self.run_state = "running"
            self.clock.vm_start()
            if self.clock.mode == "virtual":
                # Nobody would advance a virtual clock just to get past the boot: start() runs it, so the guest's
                # boot report is there when start() returns and the clocks read the boot delay.
                self.clock.advance(self.guest.boot_delay_ns / NS)
        self._settle()

    def _settle(self) -> None:
        """On a virtual clock, run what is due at this very instant (time itself moves only in advance())."""
        if self.clock.mode == "virtual":
            self.clock.advance(0)

    @property
    def running(self) -> bool:
        return self.run_state == "running"

    def shutdown(self) -> None:
        """Cancel every timer (the server is stopping)."""
        if self.device is not None:
            self.device.shutdown()
        self.guest.shutdown()
        self._firmware_timer.delete()
        self.events.shutdown()
        self.clock.close()

    def host_demand(self) -> int:
        """Bytes this VM's QEMU process would hold with nothing swapped out: its own overhead plus the guest
        RAM the host still holds for the guest (memory.py, ``resident``)."""
        return QEMU_OVERHEAD + self.guest.memory.host_resident(self.clock.vm_ns())

    def host_rss(self) -> int:
        """The QEMU process's resident memory (VmRSS): its demand less what the host swapped out."""
        if self.account_host is not None:
            self.account_host()
        return max(0, self.host_demand() - self.host_swapped)

    # -- events -------------------------------------------------------------------------------------------------
    def add_event_listener(self, cb: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``cb(event_dict)`` for every event (exactly as on the wire); returns the unsubscribe function."""
        return self.events.add_listener(cb)

    def emit(self, name: str, data: dict | None = None) -> None:
        """Queue an event as QEMU's monitor does (events.py: timestamps, BALLOON_CHANGE rate limit)."""
        self.events.emit(name, data)

    # -- QMP ----------------------------------------------------------------------------------------------------
    def greeting(self) -> dict:
        return {"QMP": qdict((("version", self._version()), ("capabilities", ["oob"])))}

    def _version(self) -> dict:
        p = self.profile
        triple = qdict((("major", p.major), ("minor", p.minor), ("micro", p.micro)))
        return qdict((("qemu", triple), ("package", p.package)))

    def execute(self, command: str, arguments: dict | None = None) -> Any:
        """Run one QMP command; raises QMPError exactly as QEMU words it."""
        cmd = lookup(command)
        args = check_arguments(cmd, arguments or {})
        handler = getattr(self, "_cmd_" + command.replace("-", "_"))
        result = handler(**{k.replace("-", "_"): v for k, v in args.items()}) if not cmd.open else handler(args)
        if self.run_state != "shutdown":
            self._settle()
        return result

    def _need_device(self) -> VirtioBalloon:
        if self.device is None:
            raise QMPError("DeviceNotActive", NO_BALLOON)
        return self.device

    def _cmd_query_version(self) -> dict:
        return self._version()

    def _cmd_query_status(self) -> dict:
        pairs: list[tuple[str, Any]] = [("running", self.running)]
        if self.version < (8, 1):
            pairs.append(("singlestep", False))  # removed from StatusInfo in QEMU 8.1
        pairs.append(("status", self.run_state))
        return qdict(pairs)

    def _cmd_query_commands(self) -> list[dict]:
        return [{"name": name} for name in ("qmp_capabilities", *COMMANDS)]

    def _cmd_query_balloon(self) -> dict:
        return {"actual": self._need_device().actual_bytes}

    def _cmd_balloon(self, value: int) -> dict:
        dev = self._need_device()
        if value <= 0:
            name = "target" if self.version < (8, 2) else "value"  # renamed in QEMU 8.2
            raise QMPError("GenericError", f"Parameter '{name}' expects a size")
        dev.set_target(value)
        return {}

    def _cmd_query_memory_size_summary(self) -> dict:
        return qdict((("base-memory", self.config.ram_size), ("plugged-memory", 0)))

    def _cmd_qom_list(self, path: str) -> list[dict]:
        return resolve(self.root, path).list_properties()

    def _cmd_qom_get(self, path: str, property: str) -> Any:
        return resolve(self.root, path, report_ambiguous=False).get(property)

    def _cmd_qom_set(self, path: str, property: str, value: Any) -> dict:
        resolve(self.root, path, report_ambiguous=False).set(property, value)
        return {}

    def _cmd_stop(self) -> dict:
        if self.running:
            self.clock.vm_stop()
            self.run_state = "paused"
            self.emit("STOP")
        return {}

    def _cmd_cont(self) -> dict:
        if self.run_state in ("prelaunch", "paused"):
            self.run_state = "running"
            self.clock.vm_start()
            self.emit("RESUME")
        return {}

    def _cmd_system_reset(self) -> dict:
        self._reset(False, "host-qmp-system-reset")
        return {}

    def _reset(self, by_guest: bool, reason: str, firmware: bool = True) -> None:
        """A machine reset: RESET event, virtio reset of the balloon, the guest reboots.  Then, once the VM runs,
        the firmware resets the machine again (see FIRMWARE_RESETS_NS)."""
        self.emit("RESET", qdict((("guest", by_guest), ("reason", reason))))
        if not self.running and self.run_state != "shutdown":
            # QEMU's main loop after a reset: a VM that was not running is left in "prelaunch" (a stopped VM
            # reads "paused" before the reset and "prelaunch" after it; cont starts it as after -S)
            self.run_state = "prelaunch"
        if self.device is not None:
            self.device.reset()
        self.guest.reset()
        if firmware:
            self._firmware_base = self.clock.vm_ns()
            self._firmware_left = list(FIRMWARE_RESETS_NS)
            self._firmware_timer.mod(self._firmware_base + self._firmware_left[0])

    def _firmware_reset(self) -> None:
        self._firmware_left.pop(0)
        self._reset(True, "guest-reset", firmware=False)
        if self._firmware_left:
            self._firmware_timer.mod(self._firmware_base + self._firmware_left[0])

    def _guest_reboot(self) -> None:
        """The guest rebooted itself (``reboot`` inside it): a guest reset, then (assumed) the firmware's."""
        self._reset(True, "guest-reset")

    def _cmd_quit(self) -> dict:
        self.emit("SHUTDOWN", qdict((("guest", False), ("reason", "host-qmp-quit"))))
        self.clock.vm_stop()
        self.run_state = "shutdown"
        if self.on_quit is not None:
            loop = self.clock.loop
            if loop is not None:
                loop.call_soon(self.on_quit)
            else:
                self.on_quit()
        return {}

    def _backend_path(self) -> str | None:
        return None if self.device_path is None else self.device_path + "/virtio-backend"

    def _cmd_x_query_virtio(self) -> list[dict]:
        return virtio_list(self._backend_path())

    def _cmd_x_query_virtio_status(self, path: str) -> dict:
        """QEMU resolves ``path`` (partial paths too) and wants the virtio device itself, not its PCI proxy."""
        try:
            node = resolve(self.root, path)
        except QMPError:
            node = None
        if node is None or self.device is None or node.path != self._backend_path():
            raise not_a_virtio_device(self.version, path)
        return virtio_status(self.device, self.running)

    # -- vendor commands ------------------------------------------------------------------------------------------
    def _cmd_x_balloonlab_advance(self, seconds: float) -> dict:
        if self.clock.mode != "virtual":
            raise QMPError("GenericError", "x-balloonlab-advance needs the virtual clock "
                                           "(start the emulator with clock=virtual)")
        if not seconds >= 0 or seconds == float("inf"):
            raise QMPError("GenericError", "x-balloonlab-advance: seconds must be a finite number >= 0")
        if seconds > MAX_ADVANCE_S:
            # One advance runs every timer on the server's loop: bound it, so one command cannot hang every client.
            raise QMPError("GenericError", f"x-balloonlab-advance: at most {MAX_ADVANCE_S} seconds (31 days) at a "
                                           "time; advance in steps")
        self.advance(seconds)
        return {}

    def _cmd_x_balloonlab_status(self) -> dict:
        devices = []
        if self.device is not None:
            devices.append({"path": self.device_path, **self.device.snapshot()})
        return {"clock": self.clock.mode, "guest": self.guest.name, "qemu-version": self.profile.version,
                "vm-clock-ns": self.clock.vm_ns(), "running": self.running, "devices": devices,
                # beyond QEMU's own fields: the host wall clock of this emulator (virtual runs have their own)
                "wall-clock": self.clock.wall_time(),
                # and the host side (docs/qemu-behaviour.md, A3): what the QEMU process holds, what the host swapped out
                "host-rss": self.host_rss(), "host-swapped": self.host_swapped}

    def _balloon_at(self, path: str | None) -> VirtioBalloon:
        """The balloon a vendor command names by ``path`` (the device or its virtio backend; default: the one)."""
        dev = self._need_device()
        if path is not None:
            node = resolve(self.root, path)
            if node.path not in (self.device_path, self._backend_path()):
                raise QMPError("GenericError", f"'{path}' is not a virtio-balloon device")
        return dev

    def _cmd_x_balloonlab_trace(self, path: str | None = None, since: int = 0) -> dict:
        return self._balloon_at(path).statsq.trace(since)

    def _cmd_x_balloonlab_reports(self, path: str | None = None, since: int = 0) -> dict:
        return self._balloon_at(path).reports_since(since)

    def _cmd_x_balloonlab_guest(self, args: dict) -> Any:
        params = dict(args)
        action = params.pop("action")
        return self.guest.action(action, params)
