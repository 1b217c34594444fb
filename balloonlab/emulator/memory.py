"""A guest's memory, good enough for its balloon statistics to move the way a real guest's do.

The model keeps a few quantities (bytes) and derives the rest when a report is due, so an idle guest costs
nothing between reports and 24 virtual hours of polling stay cheap:

* ``managed``: RAM the kernel manages (RAM minus firmware/kernel reservations; Linux's ``totalram``).
* ``balloon``: pages the balloon driver holds.  Without deflate-on-oom they leave ``totalram`` (total-memory
  shrinks); with it they stay in the total and count as used.
* ``kernel``: slab, page tables, stacks (a little jitter so plots are alive).
* ``anon``: process memory (an idle base plus workloads); what does not fit goes to swap, and what does not fit
  in swap gets a process OOM-killed (or, with deflate-on-oom, first deflates the balloon).
* ``cache``: reclaimable page cache; it grows with file I/O workloads and is reclaimed under pressure
  (counted as async/direct scans and reclaims, alloc stalls).  ``shmem`` (tmpfs) counts as disk cache too but is
  not reclaimable, as in Linux's ``NR_FILE_PAGES``.

The derived statistics follow the Linux driver: free = ``freeram``, total = ``totalram``, available =
``si_mem_available()`` (free minus the reserve, plus the part of the caches Linux counts as reclaimable; on an
idle guest it is a little *below* free, as observed on real guests), disk-caches = ``NR_FILE_PAGES``.
Workloads are ramps (an amount spread over a duration) settled on demand from the VM clock, and all noise comes
from a seeded ``random.Random``, so a virtual-clock run is reproducible.

The host's side (docs/qemu-behaviour.md, A3; docs/emulator.md, "The host's side") is one more quantity,
``resident``: the guest RAM the host holds for this VM, i.e. every page the guest ever touched and the host has not
been given back. Guest memory in use (``ram_size - free - balloon``) can only raise it: the page allocator hands
out resident free pages first, so growth beyond them touches new ones. Freeing leaves the pages resident, unless
free page reporting is on: then, ``REPORT_DELAY_NS`` later, the free part goes back to the host in ``REPORT_BLOCK``
blocks. Inflating the balloon gives its pages back at once (the driver takes hot, resident free pages first);
deflating gives the guest pages that become resident only when it touches them again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20
PAGE = 4096

#: Per-kernel calibration: (fixed reservation, idle anon, idle kernel, idle page cache) in bytes.  Chosen so a
#: 512 MiB guest reports what real 6.1 / 6.12 guests reported (spec A/A2): total 492847104 / 487280640.
KERNELS = {
    "6.1": (35_635_200, 15 * MiB, 11_661_312, 2_269_184),
    "6.12": (41_201_664, 15 * MiB, 9_252_864, 2_478_080),
}


#: Free page reporting: the guest reports free blocks of pageblock order (2 MiB on x86) and larger, 2 s after
#: they appear (Linux mm/page_reporting.c: PAGE_REPORTING_DELAY 2*HZ); QEMU discards them at once.
REPORT_BLOCK = 2 * MiB
REPORT_DELAY_NS = 2_000_000_000


#: Host memory a QEMU process holds besides guest RAM (its code, libraries, TCG translation cache, device
#: state).  docs/qemu-behaviour.md, A3: a booted 512 MiB tiny guest under TCG QEMU 7.2 had a VmRSS of 200-223 MiB,
#: of which the guest model's in-use RAM (70 MiB) is resident; the rest is QEMU's own.
QEMU_OVERHEAD = 135 * MiB


def _pages(n: float) -> int:
    return int(n) // PAGE * PAGE


#: Workloads that may run at once in one guest.
MAX_WORKLOADS = 64


@dataclass
class Ramp:
    """A workload: ``amount`` bytes (negative frees) added to ``kind`` evenly over ``[start, start+duration)``."""

    kind: str  # "anon" | "cache"
    amount: int
    start_ns: int
    duration_ns: int
    done: int = 0  # bytes applied so far

    def due(self, now_ns: int) -> int:
        """Bytes to apply now (since the last call)."""
        if self.duration_ns <= 0 or now_ns >= self.start_ns + self.duration_ns:
            target = self.amount
        elif now_ns <= self.start_ns:
            target = 0
        else:
            target = int(self.amount * (now_ns - self.start_ns) / self.duration_ns / PAGE) * PAGE
        delta = target - self.done
        self.done = target
        return delta

    def finished(self, now_ns: int) -> bool:
        return now_ns >= self.start_ns + self.duration_ns


class MemoryModel:
    """A Linux guest's memory: quantities it keeps, statistics it derives (see the module docstring)."""

    def __init__(self, ram_size: int, kernel: str = "6.1", seed: int = 0, deflate_on_oom: bool = False,
                 swap_size: int | None = None, free_page_reporting: bool = False) -> None:
        fixed, anon, kern, cache = KERNELS.get(kernel, KERNELS["6.1"])
        self.ram_size = ram_size
        self.kernel = kernel
        self.deflate_on_oom = deflate_on_oom
        self.free_page_reporting = free_page_reporting
        # struct page for every 4 KiB page (64 bytes) comes on top of the fixed reservation.
        self.managed = _pages(max(ram_size // 2, ram_size - fixed - ram_size // 64))
        # Derived from managed, which never changes: computed once, as every report needs them.
        self._low = self._wmark(1.0)  # the low watermark
        self._reserve = _pages(self.managed * 0.005)
        self.swap_size = _pages(ram_size // 2 if swap_size is None else swap_size)
        self.rng = random.Random(seed)
        self._idle = (anon, kern, cache)
        #: Set by the driver when deflate-on-oom: callback(bytes_needed) -> bytes freed.
        self.on_oom_deflate: Callable[[int], int] | None = None
        self.boot(0)

    def boot(self, now_ns: int) -> None:
        """A fresh boot: counters from zero, idle memory, no workloads, no balloon."""
        anon, kern, cache = self._idle
        self.balloon = 0
        self.kernel_base = kern
        self.anon_base = anon
        self.anon = anon  # demand (resident + swapped)
        self.swapped = 0
        self.cache = cache
        self.cache_floor = cache // 2
        self.shmem = 0
        self.ramps: list[Ramp] = []
        self.swap_in = self.swap_out = 0
        self.major_faults = 0
        self.minor_faults = 600 + self.rng.randrange(100)  # observed: 668 right after boot
        self.htlb_pgalloc = self.htlb_pgfail = 0
        self.oom_kills = self.alloc_stalls = 0
        self.async_scans = self.direct_scans = self.async_reclaims = self.direct_reclaims = 0
        self._jitter = 0
        self._last_ns = now_ns
        #: guest RAM resident on the host (see the module docstring); a boot touches what it uses
        self.resident = self.in_use
        self._report_at: int | None = None

    # -- workloads ---------------------------------------------------------------------------------------
    def add_ramp(self, kind: str, amount: int, now_ns: int, duration_ns: int) -> None:
        """Start a workload; ``ValueError`` when :data:`MAX_WORKLOADS` are still running (every report walks
        them, so their number is bounded)."""
        self.settle(now_ns)
        if len(self.ramps) >= MAX_WORKLOADS:
            raise ValueError(f"{MAX_WORKLOADS} workloads are still running; wait for one to finish, or 'idle'")
        self.ramps.append(Ramp(kind, amount, now_ns, max(0, duration_ns)))
        self.settle(now_ns)

    def workload_anon(self) -> int:
        """Process memory above the idle base (what ``free`` without a size releases)."""
        return max(0, self.anon - self.anon_base + sum(r.amount - r.done for r in self.ramps if r.kind == "anon"))

    def idle(self, now_ns: int) -> None:
        """Stop every running workload where it is."""
        self.settle(now_ns)
        self.ramps.clear()

    def drop_caches(self, now_ns: int) -> None:
        self.settle(now_ns)
        self.cache = self.cache_floor

    def set_shmem(self, size: int, now_ns: int) -> int:
        """tmpfs holds ``size`` bytes now, or as much as fits (anonymous memory may go to swap to make room;
        a real tmpfs write beyond that fails with ENOSPC).  Returns what it holds."""
        self.settle(now_ns)
        fits = self._shmem_room()
        if size > fits and self.deflate_on_oom and self.balloon and self.on_oom_deflate:
            self.on_oom_deflate(size - fits)
            fits = self._shmem_room()
        if size > fits:
            # tmpfs pages cannot be reclaimed: the writer runs the guest out of memory (docs/qemu-behaviour.md, A3:
            # the shell running the fill never came back)
            self._oom_kill()
        self.shmem = _pages(max(0, min(size, fits)))
        self.settle(now_ns)
        return self.shmem

    def _shmem_room(self) -> int:
        used_balloon = self.balloon if self.deflate_on_oom else 0
        return self.total - self.kernel_base - used_balloon - self._low - self.cache_floor

    def set_balloon(self, size: int, now_ns: int) -> None:
        """The driver now holds ``size`` bytes.  Pages it takes leave the host at once (resident ones first);
        pages it gives back are not resident until the guest touches them."""
        self.settle(now_ns)
        grown = size - self.balloon
        self.balloon = size
        self.settle(now_ns)
        if grown > 0:
            self.resident = max(self.in_use, self.resident - grown)

    # -- derived quantities -----------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.managed if self.deflate_on_oom else self.managed - self.balloon

    def _user_room(self) -> int:
        """Memory processes and caches can use: total minus kernel, balloon (if it counts as used), min_free."""
        used_balloon = self.balloon if self.deflate_on_oom else 0
        return self.total - self.kernel_base - used_balloon - self._low

    def _wmark(self, scale: float) -> int:
        return _pages(self.managed * 0.0025 * scale)

    @property
    def free(self) -> int:
        used_balloon = self.balloon if self.deflate_on_oom else 0
        return max(0, self.total - self.kernel_base - self._jitter - (self.anon - self.swapped) - self.shmem
                   - self.cache - used_balloon)

    @property
    def available(self) -> int:
        return self._available(self.free)

    def _available(self, free: int) -> int:
        low = self._low
        slab = 2 * MiB
        avail = (free - self._reserve + self.cache - min(self.cache // 2, low) + slab - min(slab // 2, low))
        return max(0, min(avail, self.total))

    @property
    def in_use(self) -> int:
        """Guest RAM holding data: everything but free pages and the balloon (bytes)."""
        return max(0, self.ram_size - self.free - self.balloon)

    def host_resident(self, now_ns: int) -> int:
        """Guest RAM the host holds for this VM at ``now_ns`` (bytes)."""
        self.settle(now_ns)
        return self.resident

    @property
    def disk_caches(self) -> int:
        return self.cache + self.shmem

    def balloon_room(self) -> int:
        """How much more the balloon can take without forcing anything to swap (free + reclaimable cache)."""
        return max(0, self.free + self.cache - self.cache_floor - self._wmark(1.5))

    # -- time ---------------------------------------------------------------------------------------------
    def settle(self, now_ns: int) -> None:
        """Bring the model to ``now_ns``: apply workload progress, swap, reclaim, faults."""
        dt = max(0, now_ns - self._last_ns) / 1e9
        self._last_ns = max(self._last_ns, now_ns)
        grown_anon = 0
        if self.ramps:
            for r in self.ramps:
                delta = r.due(now_ns)
                if r.kind == "anon":
                    if delta < 0:
                        delta = max(delta, self.anon_base - self.anon)
                        # freed memory leaves swap and RAM in proportion
                        if self.anon > 0:
                            self.swapped += int(self.swapped * delta / self.anon)
                    else:
                        grown_anon += delta
                    self.anon += delta
                else:
                    self.cache = max(self.cache_floor, self.cache + delta)
                    if delta > 0:
                        self.minor_faults += delta // PAGE // 8
            self.ramps = [r for r in self.ramps if not r.finished(now_ns)]
        self.minor_faults += grown_anon // PAGE
        if dt:
            # an idle system still faults a little
            self.minor_faults += int(dt * 1.5 + self.rng.random())
            self._jitter = self.rng.randrange(16) * PAGE
        self._balance(dt, grown_anon)
        self._track_resident(now_ns)

    def _track_resident(self, now_ns: int) -> None:
        used = self.in_use
        if used > self.resident:
            self.resident = used
        if not self.free_page_reporting:
            return
        reportable = (self.resident - used) // REPORT_BLOCK * REPORT_BLOCK
        if reportable <= 0:
            self._report_at = None
        elif self._report_at is None:
            self._report_at = now_ns + REPORT_DELAY_NS
        elif now_ns >= self._report_at:
            self.resident -= reportable
            self._report_at = None

    def _balance(self, dt: float, grown: int) -> None:
        room = self._user_room() - self.shmem
        # page cache gives way first
        excess = (self.anon - self.swapped) + self.cache - room
        if excess > 0:
            reclaim = min(excess, self.cache - self.cache_floor)
            if reclaim > 0:
                self.cache -= reclaim
                self._count_reclaim(reclaim, grown)
                excess -= reclaim
        if excess > 0:
            # then anonymous memory goes to swap
            swap_free = self.swap_size - self.swapped
            if excess > swap_free and self.deflate_on_oom and self.balloon and self.on_oom_deflate:
                excess -= self.on_oom_deflate(excess - swap_free)
            if excess > swap_free:
                self._oom_kill()
                return
            out = _pages(excess + PAGE - 1)
            self.swapped += out
            self.swap_out += out
            self.alloc_stalls += 1 + out // (8 * MiB)
            self._count_reclaim(out, grown)
        elif self.swapped > 0:
            back = min(self.swapped, _pages(-excess))
            # touching swapped pages brings them back (major faults); under pressure some always churn
            churn = _pages(min(self.swapped - back, self.swapped * 0.002 * dt))
            back += churn
            if churn:
                self.swap_out += churn
            if back:
                self.swapped -= back - churn
                self.swap_in += back
                self.major_faults += back // PAGE

    def _count_reclaim(self, amount: int, grown: int) -> None:
        direct = amount // 3 if grown > amount // 2 else amount // 10
        self.async_reclaims += amount - direct
        self.direct_reclaims += direct
        self.async_scans += (amount - direct) * 3 // 2
        self.direct_scans += direct * 3 // 2

    def host_swap_faults(self, pages: int) -> None:
        """The host swapped some of this VM's memory out and the guest touched ``pages`` of it again: each touch
        waits for the host's disk (docs/differences.md, ``host-swap-in-guest-counters``)."""
        if pages > 0:
            self.major_faults += pages
            self.alloc_stalls += 1 + pages // 256

    def _oom_kill(self) -> None:
        """The OOM killer ends the workload: its memory (and swap) is released."""
        self.oom_kills += 1
        self.ramps = [r for r in self.ramps if r.kind != "anon"]
        self.anon = self.anon_base
        self.swapped = 0

    # -- the report ------------------------------------------------------------------------------------------
    def values(self) -> list[int]:
        """Every statistic indexed by virtio tag, as a Linux 6.12 driver fills them (older drivers send fewer)."""
        free = self.free
        return [self.swap_in, self.swap_out, self.major_faults, self.minor_faults,
                free, self.total, self._available(free), self.cache + self.shmem,
                self.htlb_pgalloc, self.htlb_pgfail, self.oom_kills, self.alloc_stalls,
                self.async_scans, self.direct_scans, self.async_reclaims, self.direct_reclaims]

    def snapshot(self) -> dict:
        """The model's state for ``x-balloonlab-guest status`` (bytes)."""
        return {"ram": self.ram_size, "managed": self.managed, "total": self.total, "free": self.free,
                "available": self.available, "page-cache": self.cache, "tmpfs": self.shmem,
                "anon": self.anon, "swapped": self.swapped, "swap-size": self.swap_size,
                "balloon": self.balloon, "kernel": self.kernel_base,
                "workloads": [{"kind": r.kind, "amount": r.amount, "done": r.done} for r in self.ramps],
                "oom-kills": self.oom_kills, "resident": self.resident}
