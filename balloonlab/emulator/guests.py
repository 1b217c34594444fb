"""Guest models: what runs inside the emulated VM and drives the balloon device's queues and config space.

Every guest runs on the VM clock only, so nothing happens while the VM is paused.  A guest with a balloon driver
loads it ``BOOT_DELAY_NS`` (1 s) after power-on and again after every reset, acks the STATS_VQ feature, parks one filled
buffer (the boot report) and answers each request after ``ANSWER_DELAY``; it also follows the balloon target
(``num_pages``) in 1 MiB steps, writing ``actual`` after each, as Linux's driver does.

* ``linux``: Linux's virtio_balloon driver.  On the QEMU 7.2 profile it is a 6.1 kernel (tags 0-9), on 9.2 and
  10.0 a 6.12 kernel (all 16 tags); ``MachineConfig.guest_kernel`` picks one explicitly.
* ``nodriver``: no balloon driver: never reports (``last-update`` stays 0), ``actual`` never moves.
* ``buggy``: answers the boot report, then keeps the buffer after the first request: polling stops for good.
* ``partial``: an old driver (Linux 4.5 era) that reports tags 0-5 only: the rest stay unset.
* ``replay``: plays back a recording (``balloonlab.replay``): the recorded reports at their recorded seconds and
  the recorded host side (balloon size, targets, polling interval) at their recorded times; see ReplayGuest.
* ``windows``: virtio-win's balloon driver with its balloon service: ``free-memory`` and ``available-memory`` are
  Windows' "available" (free + zeroed + standby cache), ``disk-caches`` the standby cache; no hugetlb stats.
  The service can be stopped (the driver then never answers) or switched to a build that answers with every
  stat unset (``x-balloonlab-guest {"action": "service", "state": "running"|"stopped"|"empty"}``).

Guest actions (``x-balloonlab-guest``) are handled by :meth:`Guest.action`; docs/emulator.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import QMPError
from ..units import parse_duration, parse_size
from .clock import NS, VM, Clock
from .device import VirtioBalloon
from .memory import MemoryModel
from .workloads import Workload, WorkloadSpec
from .virtio import (F_DEFLATE_ON_OOM, F_FREE_PAGE_HINT, F_REPORTING, F_STATS_VQ, LINUX_TRANSPORT, PAGE_SHIFT,
                     TRANSPORT_FEATURES, encode_stats, encode_values)

#: EVENT_IDX and VERSION_1: the transport bits a driver older than RING_RESET (Linux 6.0) acks.
_OLD_TRANSPORT = (1 << TRANSPORT_FEATURES["VIRTIO_RING_F_EVENT_IDX"]) | (1 << TRANSPORT_FEATURES["VIRTIO_F_VERSION_1"])

_FIRST_TAGS = tuple(range(16))  #: a driver that sends tags 0..n-1 reports the first n values of the model
BOOT_DELAY_NS = NS  #: power-on to balloon driver loaded (a TCG boot of the tiny guest takes 2.5-4 s)
ANSWER_DELAY_NS = 2_000_000  #: request to answer (the driver's workqueue)
BALLOON_CHUNK = 256  #: pages per inflate/deflate step (VIRTIO_BALLOON_ARRAY_PFNS_MAX)
BALLOON_STEP_NS = 2_000_000  #: time per step (a TCG guest inflated 256 MiB in about 0.55 s)
BALLOON_RETRY_NS = 200_000_000  #: "Out of puff": retry after 200 ms when memory is short


def default_kernel(qemu_version: tuple[int, int]) -> str:
    """The guest kernel observed with each QEMU profile: Debian 12's 6.1 with 7.2, 13's 6.12 after."""
    return "6.1" if qemu_version < (9, 2) else "6.12"


class Guest:
    """The ``linux`` guest; the other models override a few hooks."""

    name = "linux"
    #: Feature bits the driver acks (the device keeps those it offers).  Linux's driver knows every balloon bit
    #: but clears PAGE_POISON unless the kernel poisons freed pages (it does not by default); of the transport
    #: bits it acks EVENT_IDX, VERSION_1 and RING_RESET (observed with x-query-virtio-status).
    driver_features = F_STATS_VQ | F_DEFLATE_ON_OOM | F_FREE_PAGE_HINT | F_REPORTING | LINUX_TRANSPORT
    has_driver = True

    def __init__(self, clock: Clock, device: VirtioBalloon | None, ram_size: int, *, seed: int = 0,
                 kernel: str = "6.1", boot_delay_ns: int = BOOT_DELAY_NS, workload: WorkloadSpec | None = None) -> None:
        self.clock = clock
        self.boot_delay_ns = boot_delay_ns
        self.device = device
        self.kernel = kernel
        self.tags = tuple(range(16 if kernel != "6.1" else 10))
        doo = bool(device and device.deflate_on_oom)
        self.memory = MemoryModel(ram_size, kernel=kernel, seed=seed, deflate_on_oom=doo)
        self.memory.on_oom_deflate = self._oom_deflate
        self.answering = True
        self.driver_loaded = False
        #: set by the machine: the guest asks for a reboot (RESET "guest-reset" and the firmware's resets)
        self.on_reboot: Callable[[], None] | None = None
        self.requests = 0
        self.answers = 0
        self._boot_timer = clock.new_timer(VM, self._load_driver)
        self._answer_timer = clock.new_timer(VM, self._answer)
        self._balloon_timer = clock.new_timer(VM, self._balloon_step)
        #: what the guest's programs do with memory (workloads.py); None: only what actions start
        self.workload = None if workload in (None, "idle") else Workload(workload, self.memory, clock, seed)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def power_on(self) -> None:
        """The VM starts (or restarts) executing the guest: boot, then load the driver."""
        self.memory.boot(self.clock.vm_ns())
        self.memory.free_page_reporting = False  # until the driver negotiates it
        self.driver_loaded = False
        if self.has_driver and self.device is not None:
            self._boot_timer.mod_in(self.boot_delay_ns)
        if self.workload is not None:
            self.workload.start()

    def reset(self) -> None:
        """system_reset: the guest reboots; its driver reloads and reports again."""
        self.shutdown()
        self.power_on()

    def shutdown(self) -> None:
        for t in (self._boot_timer, self._answer_timer, self._balloon_timer):
            t.delete()
        if self.workload is not None:
            self.workload.stop()

    def _load_driver(self) -> None:
        dev = self.device
        assert dev is not None
        dev.driver_ok(self.driver_features)
        # "Free page reporting enabled" (the guest's log, docs/qemu-behaviour.md A3) once both sides agree on it
        self.memory.free_page_reporting = bool(dev.guest_features & F_REPORTING)
        dev.on_config_change = self._config_changed
        dev.statsq.on_request = self._on_request
        self.driver_loaded = True
        self.requests = 0
        self._park_first_buffer()
        self._config_changed()

    def _park_first_buffer(self) -> None:
        """Linux's probe: ``init_vqs`` fills the stats buffer once and adds it (the boot report)."""
        self.device.statsq.guest_add(self.report())  # type: ignore[union-attr]

    # -- stats ---------------------------------------------------------------------------------------------
    def report(self) -> bytes:
        """A filled stats buffer."""
        mem = self.memory
        mem.settle(self.clock.vm_ns())
        values = mem.values()
        tags = self.tags
        n = len(tags)
        return encode_values(tags, values[:n] if tags == _FIRST_TAGS[:n] else [values[t] for t in tags])

    def _on_request(self) -> None:
        self.requests += 1
        if self.answering:
            self._answer_timer.mod_in(ANSWER_DELAY_NS)

    def _answer(self) -> None:
        if self.device is not None and self.device.statsq.holder == "guest":
            self.answers += 1
            self.device.statsq.guest_add(self.report())

    # -- balloon ---------------------------------------------------------------------------------------------
    def _config_changed(self) -> None:
        if not self._balloon_timer.pending:
            self._balloon_timer.mod_in(BALLOON_STEP_NS)

    def _balloon_step(self) -> None:
        dev = self.device
        if dev is None or not self.driver_loaded:
            return
        mem = self.memory
        mem.settle(self.clock.vm_ns())
        have = mem.balloon >> PAGE_SHIFT
        want = dev.config.num_pages
        if want > have:
            room = mem.balloon_room() >> PAGE_SHIFT
            step = min(BALLOON_CHUNK, want - have, room)
            if step <= 0:
                self._balloon_timer.mod_in(BALLOON_RETRY_NS)
                return
            have += step
        elif want < have:
            have -= min(BALLOON_CHUNK, have - want)
        else:
            return
        mem.set_balloon(have << PAGE_SHIFT, self.clock.vm_ns())
        dev.guest_set_actual(have)
        if have != want:
            self._balloon_timer.mod_in(BALLOON_STEP_NS)

    def _oom_deflate(self, needed: int) -> int:
        """deflate-on-oom: the OOM notifier gives balloon pages back instead of killing a process."""
        freed = min(needed, self.memory.balloon)
        freed = (freed + 4095) // 4096 * 4096
        freed = min(freed, self.memory.balloon)
        self.memory.balloon -= freed
        if self.device is not None:
            self.device.guest_set_actual(self.memory.balloon >> PAGE_SHIFT)
        return freed

    # -- actions (x-balloonlab-guest) -----------------------------------------------------------------------------
    def action(self, name: str, params: dict) -> Any:
        handler: Callable[[dict], Any] | None = getattr(self, "_act_" + name.replace("-", "_"), None)
        if handler is None:
            raise QMPError("GenericError", f"x-balloonlab-guest: unknown action '{name}' "
                                           f"(known: {', '.join(self.actions())})")
        try:
            result = handler(params)
        except ValueError as e:  # the memory model refused (e.g. too many workloads at once)
            raise QMPError("GenericError", f"x-balloonlab-guest: {name}: {e}") from None
        return self.snapshot() if result is None else result

    def actions(self) -> list[str]:
        return sorted(n[5:].replace("_", "-") for n in dir(self) if n.startswith("_act_"))

    def snapshot(self) -> dict:
        mem = self.memory
        mem.settle(self.clock.vm_ns())
        return {"guest": self.name, "kernel": self.kernel, "driver-loaded": self.driver_loaded,
                "answering": self.answering, "requests": self.requests, "answers": self.answers,
                "memory": mem.snapshot()}

    def _size(self, params: dict, key: str = "size", default: int | None = None) -> int:
        if key not in params:
            if default is None:
                raise QMPError("GenericError", f"x-balloonlab-guest: parameter '{key}' is missing (e.g. \"128M\")")
            return default
        try:
            return parse_size(params[key])
        except ValueError as e:
            raise QMPError("GenericError", f"x-balloonlab-guest: {key}: {e}") from None

    def _duration(self, params: dict) -> int:
        try:
            return int(parse_duration(params.get("duration", 0)) * NS)
        except ValueError as e:
            raise QMPError("GenericError", f"x-balloonlab-guest: duration: {e}") from None

    def _check(self, params: dict, *allowed: str) -> None:
        extra = sorted(set(params) - set(allowed))
        if extra:
            raise QMPError("GenericError", f"x-balloonlab-guest: parameter '{extra[0]}' is unexpected")

    def _act_status(self, params: dict) -> dict:
        self._check(params)
        return self.snapshot()

    def _act_allocate(self, params: dict) -> None:
        """A process allocates and touches ``size`` over ``duration`` (swap and OOM if it does not fit)."""
        self._check(params, "size", "duration")
        self.memory.add_ramp("anon", self._size(params), self.clock.vm_ns(), self._duration(params))

    def _act_free(self, params: dict) -> None:
        """Processes release ``size`` (default: everything workloads allocated) over ``duration``."""
        self._check(params, "size", "duration")
        now = self.clock.vm_ns()
        self.memory.settle(now)
        size = self._size(params, default=self.memory.workload_anon())
        self.memory.add_ramp("anon", -size, now, self._duration(params))

    def _act_cache(self, params: dict) -> None:
        """File reads grow the page cache by ``size`` over ``duration`` (reclaimable)."""
        self._check(params, "size", "duration")
        self.memory.add_ramp("cache", self._size(params), self.clock.vm_ns(), self._duration(params))

    def _act_tmpfs(self, params: dict) -> None:
        """Files in tmpfs now hold ``size`` bytes (shmem: counted in disk-caches, not reclaimable)."""
        self._check(params, "size")
        self.memory.set_shmem(self._size(params), self.clock.vm_ns())

    def _act_drop_caches(self, params: dict) -> None:
        """``echo 3 > /proc/sys/vm/drop_caches``."""
        self._check(params)
        self.memory.drop_caches(self.clock.vm_ns())

    def _act_idle(self, params: dict) -> None:
        """Stop every running workload where it is."""
        self._check(params)
        self.memory.idle(self.clock.vm_ns())

    def _act_reboot(self, params: dict) -> None:
        """``reboot`` inside the guest: a guest-initiated machine reset; the driver reloads and reports again."""
        self._check(params)
        if self.on_reboot is not None:
            self.on_reboot()
        else:
            self.reset()

    def _act_stop_answering(self, params: dict) -> None:
        """The driver keeps the buffer from now on (a hung workqueue): polling stops for good."""
        self._check(params)
        self.answering = False

    def _act_start_answering(self, params: dict) -> None:
        """The driver answers again, including a request it is still holding."""
        self._check(params)
        self.answering = True
        if self.device is not None and self.device.statsq.holder == "guest":
            self._answer_timer.mod_in(ANSWER_DELAY_NS)


class NoDriverGuest(Guest):
    """A guest without a balloon driver: the device never gets a buffer."""

    name = "nodriver"
    has_driver = False


class BuggyGuest(Guest):
    """Answers the boot report, then never gives the buffer back after the first request."""

    name = "buggy"

    def _on_request(self) -> None:
        self.requests += 1  # keeps the buffer: no answer, ever


class PartialGuest(Guest):
    """An old driver (Linux 4.5 era: before available-memory and disk-caches) reporting tags 0-5 only."""

    name = "partial"
    driver_features = F_STATS_VQ | _OLD_TRANSPORT  # DEFLATE_ON_OOM came with Linux 4.6

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tags = (0, 1, 2, 3, 4, 5)


class WindowsGuest(Guest):
    """virtio-win's balloon driver and service: same stat names, Windows meanings."""

    name = "windows"
    driver_features = F_STATS_VQ | _OLD_TRANSPORT  # an assumption: not observed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kernel = "windows"
        self.tags = tuple(range(8))
        self.service = "running"

    def _park_first_buffer(self) -> None:
        # The driver only adds the buffer once the service hands it stats.
        if self.service != "stopped":
            self.device.statsq.guest_add(self.report())  # type: ignore[union-attr]

    def report(self) -> bytes:
        if self.service == "empty":
            return b""
        mem = self.memory
        mem.settle(self.clock.vm_ns())
        avail_phys = mem.free + mem.cache  # free + zeroed + standby
        values = {0: mem.swap_in, 1: mem.swap_out, 2: mem.major_faults, 3: mem.minor_faults + mem.major_faults,
                  4: avail_phys, 5: mem.total, 6: avail_phys, 7: mem.cache}
        return encode_stats((t, values[t]) for t in self.tags)

    def _on_request(self) -> None:
        self.requests += 1
        if self.answering and self.service != "stopped":
            self._answer_timer.mod_in(ANSWER_DELAY_NS)

    def _act_service(self, params: dict) -> None:
        """The balloon service: "running", "stopped" (never answers) or "empty" (answers with no stats)."""
        self._check(params, "state")
        state = params.get("state")
        if state not in ("running", "stopped", "empty"):
            raise QMPError("GenericError", "x-balloonlab-guest: service state must be 'running', 'stopped' or 'empty'")
        was = self.service
        self.service = state
        if was == "stopped" and state != "stopped" and self.device is not None and self.driver_loaded:
            if self.device.statsq.holder == "none":
                self._park_first_buffer()
            elif self.device.statsq.holder == "guest":
                self._answer_timer.mod_in(ANSWER_DELAY_NS)

    def snapshot(self) -> dict:
        st = super().snapshot()
        st["service"] = self.service
        return st


#: A stats report as the guest sends it: (tag, value) entries.
Entries = tuple[tuple[int, int], ...]
#: What the recorded host side did: the guest's balloon size (``actual``, 4 KiB pages), a ``balloon`` target
#: (bytes), a new polling interval (seconds).
HostChange = Literal["actual", "target", "interval"]


@dataclass(frozen=True)
class ReplayScript:
    """A recording as the ``replay`` guest plays it, in the machine's own time (built by ``client/replay.py``).

    ``start`` is the wall-clock second the machine's clocks start at (VM time 0); ``initial`` the report the
    device held when recording began, with its ``last-update``; ``reports`` every later report as
    ``(last-update, entries)``, oldest first; ``host`` the host side's changes as ``(VM ns, what, value)``, in
    time order (the polling interval in force at the start comes first, at 0).
    """

    source: str
    start: float
    initial: tuple[Entries, int] | None
    reports: tuple[tuple[int, Entries], ...]
    host: tuple[tuple[int, HostChange, int], ...]
    actual_pages: int
    duration_ns: int


class ReplayGuest(Guest):
    """A guest whose balloon driver reports what a recorded guest reported, when it reported it.

    On a request the driver holds the buffer until the next recorded report's second, then answers with its
    entries, so the device stamps the recorded ``last-update`` (the device does that itself, from the wall clock,
    which starts at the recording's start).  Replayed at the recorded interval every report comes back at its own
    second.  Polled faster, the guest cannot answer sooner than the recording did: reports arrive at the recorded
    pace.  Polled slower, a report whose second has passed is skipped (``skipped`` counts them): the guest never
    invents a report, nor moves one in time.  After the last recorded report it keeps the buffer, like a guest
    that stopped answering.  The balloon follows the recording, not the target: new targets are ignored.
    """

    name = "replay"

    def __init__(self, clock: Clock, device: VirtioBalloon | None, ram_size: int, *, script: ReplayScript,
                 **kwargs: Any) -> None:
        super().__init__(clock, device, ram_size, **kwargs)
        self.script = script
        self.played = 0
        self.skipped = 0
        self._next = 0  # the first report not yet answered (or skipped)
        self._host_next = 0
        self._started = False
        self._host_timer = clock.new_timer(VM, self._host_step)

    def shutdown(self) -> None:
        super().shutdown()
        self._host_timer.delete()

    def _load_driver(self) -> None:
        dev = self.device
        assert dev is not None
        dev.driver_ok(self.driver_features)
        dev.statsq.on_request = self._on_request
        self.driver_loaded = True
        if not self._started:  # the state the recording found; a reboot during the replay re-parks the latest
            self._started = True
            dev.config.actual = self.script.actual_pages
            dev.config.num_pages = self.script.actual_pages
        self._park_first_buffer()
        self._host_step()

    def _park_first_buffer(self) -> None:
        dev = self.device
        assert dev is not None
        if self.played:
            dev.statsq.guest_add(encode_stats(self.script.reports[self._next - 1][1]))
        elif self.script.initial is not None:
            entries, last_update = self.script.initial
            dev.statsq.guest_add(encode_stats(entries))
            # The device held this report before the recording began: it keeps the second it was stamped with.
            dev.last_update = last_update
        elif self.script.reports:
            # Recording began before the driver's boot report: the first recorded report is that one, which the
            # driver sends unasked, at its second.
            now = self.clock.wall_time()
            self._answer_timer.mod_in(max(0, round((self.script.reports[0][0] + 0.001 - now) * NS)))

    def _on_request(self) -> None:
        self.requests += 1
        if not self.answering:
            return
        now = self.clock.wall_time()
        reports = self.script.reports
        i = self._next
        while i < len(reports) and reports[i][0] + 1 <= now:
            i += 1  # its second is over: this report cannot come back at its time
        self.skipped += i - self._next
        self._next = i
        if i < len(reports):
            # 1 ms into the second, so that the device's int(wall clock) is the recorded second.
            self._answer_timer.mod_in(max(0, round((reports[i][0] + 0.001 - now) * NS)))

    def _answer(self) -> None:
        dev = self.device
        # "guest": the answer to a request; "none": the boot report (see _park_first_buffer)
        if dev is None or dev.statsq.holder == "device" or self._next >= len(self.script.reports):
            return
        entries = self.script.reports[self._next][1]
        self._next += 1
        self.played += 1
        self.answers += 1
        dev.statsq.guest_add(encode_stats(entries))

    def _config_changed(self) -> None:
        """The balloon follows the recording: a new target changes num_pages, never what the guest gives."""

    def _host_step(self) -> None:
        dev = self.device
        assert dev is not None
        changes = self.script.host
        now = self.clock.vm_ns()
        while self._host_next < len(changes) and changes[self._host_next][0] <= now:
            _, what, value = changes[self._host_next]
            self._host_next += 1
            if what == "actual":
                dev.guest_set_actual(value)
            elif what == "target":
                dev.set_target(value)
            else:
                dev.set_poll_interval(value)
        if self._host_next < len(changes):
            self._host_timer.mod(changes[self._host_next][0])

    def action(self, name: str, params: dict) -> Any:
        if name != "status":
            raise QMPError("GenericError", f"x-balloonlab-guest: the replay guest plays {self.script.source}; it "
                                           f"runs no workloads (known: status)")
        return super().action(name, params)

    def snapshot(self) -> dict:
        reports = self.script.reports
        return {"guest": self.name, "recording": self.script.source, "driver-loaded": self.driver_loaded,
                "answering": self.answering, "requests": self.requests, "answers": self.answers,
                "reports": len(reports), "played": self.played, "skipped": self.skipped,
                "next-report": reports[self._next][0] if self._next < len(reports) else None,
                "ends": self.script.start + self.script.duration_ns / NS}


GUESTS: dict[str, type[Guest]] = {
    "linux": Guest, "nodriver": NoDriverGuest, "buggy": BuggyGuest, "partial": PartialGuest,
    "windows": WindowsGuest,
}


def make_guest(model: str, clock: Clock, device: VirtioBalloon | None, ram_size: int, *, seed: int = 0,
               kernel: str = "6.1", boot_delay_ns: int = BOOT_DELAY_NS, workload: WorkloadSpec | None = None,
               replay: ReplayScript | None = None) -> Guest:
    """A guest of the named model (see :data:`GUESTS`) running ``workload``; with ``replay``, the replay guest
    playing that recording instead."""
    if replay is not None:
        return ReplayGuest(clock, device, ram_size, script=replay, seed=seed, kernel=kernel,
                           boot_delay_ns=boot_delay_ns)
    try:
        cls = GUESTS[model]
    except KeyError:
        raise ValueError(f"unknown guest model {model!r} (choose from {', '.join(GUESTS)})") from None
    return cls(clock, device, ram_size, seed=seed, kernel=kernel, boot_delay_ns=boot_delay_ns, workload=workload)
