"""A host of many emulated VMs sharing its memory: one clock for all, RSS per VM, host swap under overcommit.

Each VM is a whole :class:`~balloonlab.emulator.runner.Emulator` (its own QMP socket, device, guest).  The host
adds what no single VM knows:

* **one clock.** Every VM's clock starts at the host's epoch and time.  On a virtual clock :meth:`advance` moves
  all of them in lockstep steps of ``TICK_S`` (each VM runs its own timers in order inside a step), and any VM's
  ``x-balloonlab-advance`` moves the whole host.  On the real clock they share real time and a loop timer ticks.
* **memory.** A VM's demand is its QEMU's overhead plus the guest RAM the host holds for it (machine.py,
  ``host_demand``).  When the sum exceeds the host's RAM the host swaps the excess out, spread over the VMs by
  their demand.  Swapped pages stay out until the guest touches them: each tick every guest touches
  ``SWAP_TOUCH_PER_S`` of its swapped memory, which costs it major faults and stalls (memory.py,
  ``host_swap_faults``) and brings them back when there is room.

Everything here runs on the loop that owns the emulators (balloonlab's background loop); docs/emulator.md has the
rules and their sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clock import NS, Clock
from .config import ClockKind, MachineConfig
from .memory import PAGE, QEMU_OVERHEAD
from .runner import Emulator

TICK_S = 5
TICK_NS = TICK_S * NS
#: Of the memory the host swapped out, the share a guest touches again per second (its working set churn).
SWAP_TOUCH_PER_S = 0.01


@dataclass(frozen=True)
class HostSnapshot:
    """The host's memory at one moment (bytes); ``rss`` and ``swapped`` per VM name."""

    total: int
    swap_total: int
    swap_used: int
    rss: dict[str, int]
    swapped: dict[str, int]

    @property
    def used(self) -> int:
        return sum(self.rss.values())

    @property
    def free(self) -> int:
        return max(0, self.total - self.used)


@dataclass(frozen=True)
class VMReading:
    """What a manager on the host could read about one VM at one moment: the device's ``guest-stats`` property
    (the wire dict, as ``qom-get`` answers; None without a balloon device), ``query-balloon``'s ``actual``, the
    VM's RAM, and the QEMU process's RSS (bytes)."""

    guest_stats: dict | None
    actual: int
    ram: int
    rss: int


class EmulatedHost:
    """The VMs of one host and the host's memory (see the module docstring).  Use it on its loop's thread."""

    def __init__(self, memory: int, swap: int, clock: ClockKind = "virtual") -> None:
        if memory <= 0:
            raise ValueError(f"the host needs some memory, not {memory} bytes")
        if swap < 0:
            raise ValueError(f"host swap cannot be negative: {swap}")
        self.memory = memory
        self.swap = swap
        self.mode: ClockKind = clock
        self.epoch = time.time()
        self.vms: dict[str, Emulator] = {}
        self.swap_used = 0
        self._now_ns = 0  # virtual host time
        self._last_tick = time.monotonic()
        self._ticker: asyncio.TimerHandle | None = None
        self._closed = False
        self._watchers: set[asyncio.Task] = set()
        #: called with a VM's name when a client stopped it with QMP ``quit`` (not when its lab closed it), on the
        #: loop's thread
        self.on_vm_stopped: Callable[[str], None] | None = None

    # -- VMs ------------------------------------------------------------------------------------------------
    async def add_vm(self, name: str, config: MachineConfig, socket_path: str | None = None) -> Emulator:
        """Start one more VM on this host (at the host's current time)."""
        if self._closed:
            raise RuntimeError("this host is stopped")
        if name in self.vms:
            raise ValueError(f"a VM named {name!r} is already on this host")
        config.clock = self.mode
        loop = asyncio.get_running_loop()
        clock = Clock(self.mode, loop, start_epoch=self.epoch, start_ns=self._now_ns)
        emu = Emulator(config, socket_path, clock=clock)
        await emu.start()
        assert emu.machine is not None
        if self.mode == "virtual":
            emu.machine.advance = self.advance
        emu.machine.account_host = lambda: self._account(0)
        self.vms[name] = emu
        watcher = loop.create_task(self._watch(name, emu))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        if self.mode == "real" and self._ticker is None:
            self._ticker = loop.call_later(TICK_S, self._real_tick)
        return emu

    async def _watch(self, name: str, emu: Emulator) -> None:
        await emu.wait_closed()
        if self.vms.get(name) is emu:
            del self.vms[name]
            quit_by_client = emu.machine is not None and emu.machine.run_state == "shutdown"
            if quit_by_client and not self._closed and self.on_vm_stopped is not None:
                self.on_vm_stopped(name)

    async def stop(self) -> None:
        """Stop every VM (and the ticker)."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        emus = list(self.vms.values())
        self.vms.clear()
        for emu in emus:
            with contextlib.suppress(Exception):
                await emu.stop()
        for watcher in list(self._watchers):
            watcher.cancel()

    # -- time -----------------------------------------------------------------------------------------------
    def now_ns(self) -> int:
        """Host time since the host was made (virtual, or real monotonic)."""
        return self._now_ns

    def wall_time(self) -> float:
        """The host's wall clock (seconds since the epoch): ``last-update`` of every VM is on it."""
        if self.mode == "virtual":
            return self.epoch + self._now_ns / NS
        return time.time()

    def advance(self, seconds: float) -> None:
        """Move every VM's virtual clock ``seconds`` forward together, the host's memory with them."""
        if self.mode != "virtual":
            for emu in self.vms.values():
                assert emu.clock is not None
                emu.clock.advance(seconds)  # raises VirtualClockRequiredError with its own words
            return
        if not seconds >= 0:
            raise ValueError(f"cannot advance by {seconds!r} seconds: give a number >= 0")
        target = self._now_ns + round(seconds * NS)
        while True:
            step_end = min(target, (self._now_ns // TICK_NS + 1) * TICK_NS)
            for emu in list(self.vms.values()):
                clock = emu.clock
                if clock is not None and not clock._closed and clock.host_ns() < step_end:
                    clock.advance((step_end - clock.host_ns()) / NS)
            dt = (step_end - self._now_ns) / NS
            self._now_ns = step_end
            if step_end % TICK_NS == 0 and dt > 0:
                self._account(TICK_S)
            if step_end >= target:
                break

    def _real_tick(self) -> None:
        now = time.monotonic()
        dt, self._last_tick = now - self._last_tick, now
        self._account(dt)
        if not self._closed:
            self._ticker = asyncio.get_running_loop().call_later(TICK_S, self._real_tick)

    # -- memory ---------------------------------------------------------------------------------------------
    def _account(self, dt: float) -> None:
        """Each VM's swapped memory: touched pages come back (faults); discarded pages leave swap with the rest;
        what still does not fit in RAM goes out, spread over the VMs by what they hold."""
        machines = [e.machine for e in self.vms.values() if e.machine is not None]
        held = []
        for m in machines:
            demand = m.host_demand()
            resident = demand - QEMU_OVERHEAD  # guest RAM the host backs (in RAM or in swap)
            swapped = m.host_swapped
            if swapped and resident < m.host_backed:
                # the guest gave pages back (balloon, free page reporting): swapped ones go in proportion
                swapped = swapped * resident // max(1, m.host_backed)
            if dt > 0 and swapped:
                back = int(swapped * min(1.0, SWAP_TOUCH_PER_S * dt)) // PAGE * PAGE
                m.guest.memory.host_swap_faults(back // PAGE)
                swapped -= back
            m.host_backed = resident
            m.host_swapped = min(swapped, resident)
            held.append(demand - m.host_swapped)
        total = sum(held)
        room = self.swap - sum(m.host_swapped for m in machines)
        need = min(max(0, total - self.memory), room)  # beyond swap: docs/differences.md
        if need > 0:
            left = need
            for i, (m, h) in enumerate(zip(machines, held)):
                share = left if i == len(machines) - 1 else need * h // total
                m.host_swapped += share
                left -= share
        self.swap_used = sum(m.host_swapped for m in machines)

    def snapshot(self) -> HostSnapshot:
        """The host's memory now (brings every VM's memory model to the present first)."""
        self._account(0)
        rss, swapped = {}, {}
        for n, e in self.vms.items():
            if e.machine is not None:
                # accounted just above: machine.host_rss() would account the whole host again, once per VM
                rss[n] = max(0, e.machine.host_demand() - e.machine.host_swapped)
                swapped[n] = e.machine.host_swapped
        return HostSnapshot(total=self.memory, swap_total=self.swap, swap_used=self.swap_used, rss=rss,
                            swapped=swapped)

    def observe(self) -> tuple[HostSnapshot, dict[str, VMReading]]:
        """The host's memory and every VM's reading, all at one instant (what a policy tick looks at).  One call on
        the loop instead of three QMP round trips per VM is what makes a simulated day of a host take seconds."""
        snap = self.snapshot()
        readings: dict[str, VMReading] = {}
        for n, e in self.vms.items():
            m = e.machine
            if m is None:
                continue
            dev = m.device
            ram = m.config.ram_size
            readings[n] = VMReading(guest_stats=dev.guest_stats() if dev is not None else None,
                                    actual=dev.actual_bytes if dev is not None else ram, ram=ram,
                                    rss=snap.rss.get(n, 0))
        return snap, readings
