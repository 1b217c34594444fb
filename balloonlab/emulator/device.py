"""The virtio-balloon device: QEMU's stats polling state machine, balloon target and ``actual``.

This follows ``hw/virtio/virtio-balloon.c`` rule for rule (see docs/emulator.md and docs/qemu-behaviour.md, B):

* ``guest-stats-polling-interval`` is int64 seconds, 0 = off.  The same value again is a no-op; 0 deletes the
  timer and keeps the stats; off -> on fires the timer at once; on -> on restarts the countdown.
* The timer (on the VM clock) hands the held buffer back to the guest, which is the request, and does NOT
  re-arm.  If the device holds no buffer (or the guest did not ack STATS_VQ) it only re-arms.
* A report resets every stat to unset, applies each complete known entry, sets ``last-update`` to host wall
  seconds, and re-arms only if polling is on.  So a guest that stops answering stops polling for good, and an
  answer arriving after polling was switched off still updates the stats.
* ``balloon`` only writes ``num_pages`` and tells the guest; ``actual`` moves when the guest writes it, and
  each change raises ``BALLOON_CHANGE`` (the monitor rate-limits it, see machine.py).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..errors import QMPError
from ..stats import UNSET, stats_for_version
from .clock import NS, VM, Clock, Timer
from .qom import is_int64, qdict, type_error
from .reportlog import ReportLog
from .virtio import (
    CONFIG_SIZE_LEGACY,
    F_DEFLATE_ON_OOM,
    F_FREE_PAGE_HINT,
    F_PAGE_POISON,
    F_REPORTING,
    F_STATS_VQ,
    HOST_TRANSPORT,
    PAGE_SHIFT,
    STATUS_DRIVER_READY,
    BalloonConfig,
    StatsVirtqueue,
    decode_entries,
    feature_names,
)

UINT32_MAX = 2**32 - 1
#: ``_IN_ORDER[k]`` is the tags 0..k-1 in order (a report that can be copied into the stats array at once).
_IN_ORDER = [tuple(range(k)) for k in range(17)]
POLL_PROPERTY = "guest-stats-polling-interval"


class VirtioBalloon:
    """One virtio-balloon device (the ``virtio-balloon-device`` behind the PCI proxy)."""

    def __init__(self, clock: Clock, ram_size: int, version: tuple[int, int], *,
                 deflate_on_oom: bool = False, free_page_hint: bool = False, free_page_reporting: bool = False,
                 page_poison: bool = True, emit: Callable[[str, dict], None] | None = None) -> None:
        self.clock = clock
        self.ram_size = ram_size
        self.version = version
        self.deflate_on_oom = deflate_on_oom
        self.free_page_hint = free_page_hint
        self.free_page_reporting = free_page_reporting
        self.emit = emit or (lambda name, data: None)
        self.wire_stats = stats_for_version(version)  # QEMU's wire order
        self.n_known = 16 if version >= (9, 2) else 10  # VIRTIO_BALLOON_S_NR
        self._wire_keys = tuple(s.qmp_key for s in self.wire_stats)
        self._wire_tags = tuple(s.tag for s in self.wire_stats)
        self._wire_row = operator.itemgetter(*self._wire_tags)  # stats array -> wire order, in C
        self._unset = [UNSET] * self.n_known
        self.stats: list[int] = list(self._unset)
        self.last_update = 0
        self.poll_interval = 0
        self.timer: Timer | None = None
        self.reports = 0
        #: Every report since a client first asked for them (``x-balloonlab-reports``); None until then.
        self.report_log: ReportLog | None = None
        self.statsq = StatsVirtqueue(clock, self.n_known)
        self.statsq.on_report = self._receive_stats
        self.config = BalloonConfig()
        # QEMU: the properties switch their bits (page-poison on by default), get_features adds STATS_VQ always;
        # virtio-pci adds the transport bits.
        self.host_features = HOST_TRANSPORT | F_STATS_VQ
        for on, bit in ((deflate_on_oom, F_DEFLATE_ON_OOM), (free_page_hint, F_FREE_PAGE_HINT),
                        (page_poison, F_PAGE_POISON), (free_page_reporting, F_REPORTING)):
            if on:
                self.host_features |= bit
        if not self.host_features & (F_PAGE_POISON | F_FREE_PAGE_HINT | F_REPORTING):
            self.config.size = CONFIG_SIZE_LEGACY  # QEMU's virtio_balloon_config_size
        self.guest_features = 0
        #: The virtio device status byte the driver wrote (0 until a driver probes, 15 once it is ready).
        self.device_status = 0
        #: The queue the driver selected last (virtio-pci's queue_select); setting up the queues leaves the last.
        self.queue_sel = 0
        #: The driver's config-change interrupt handler (set by the guest model when its driver loads).
        self.on_config_change: Callable[[], None] | None = None

    # -- polling interval ----------------------------------------------------------------------------------
    def set_poll_interval(self, value: Any) -> None:
        """``qom-set ... guest-stats-polling-interval``, validated with QEMU's messages."""
        if not is_int64(value):
            raise type_error(POLL_PROPERTY, "integer")
        if value < 0:
            raise QMPError("GenericError", "timer value must be greater than zero")
        if value > UINT32_MAX:
            raise QMPError("GenericError", "timer value is too big")
        if value == self.poll_interval:
            return
        if value == 0:
            self._destroy_timer()
            return
        if self.poll_interval > 0:
            self.poll_interval = value
            self._rearm()
            return
        timer = self.timer = self.clock.new_timer(VM, self._poll)
        self.poll_interval = value
        timer.mod(self.clock.vm_ns())  # first request at once

    def _destroy_timer(self) -> None:
        if self.timer is not None:
            self.timer.delete()
            self.timer = None
        self.poll_interval = 0

    def _rearm(self) -> None:
        assert self.timer is not None  # only re-armed while polling is on
        self.timer.mod(self.clock.vm_ns() + self.poll_interval * NS)

    def _poll(self) -> None:
        # The request; re-armed only when the guest answers.  With no buffer held (device_return says False) or
        # STATS_VQ not acked there is nothing to hand back: try again later.
        if not (self.guest_features & F_STATS_VQ and self.statsq.device_return()):
            self._rearm()

    def _receive_stats(self, data: bytes) -> None:
        stats = self.stats
        n = self.n_known
        stats[:] = self._unset
        tags, values = decode_entries(data)
        if len(tags) <= n and tags == _IN_ORDER[len(tags)]:
            stats[:len(values)] = values  # tags 0, 1, 2...: what every driver sends; the loop below, at C speed
        else:
            for tag, value in zip(tags, values):
                if tag < n:
                    stats[tag] = value
        self.last_update = int(self.clock.wall_time())
        self.reports += 1
        if self.report_log is not None:
            self.report_log.append(self.clock.wall_ns(), self.last_update, self._wire_row(stats))
        if self.poll_interval > 0:
            self._rearm()

    def guest_stats(self) -> dict:
        """The ``guest-stats`` property: every stat (unset = 2**64-1) in QEMU's wire order, then last-update."""
        stats = self.stats
        return {"stats": {k: stats[t] for k, t in zip(self._wire_keys, self._wire_tags)},
                "last-update": self.last_update}

    def reports_since(self, since: int) -> dict:
        """``x-balloonlab-reports``: the reports with ``seq >= since``, in columns (reportlog.py).  The first call
        starts the log, so it answers with no reports and the cursor to read from."""
        if self.report_log is None:
            self.report_log = ReportLog(self._wire_keys, self.reports)
        return self.report_log.since(since)

    # -- balloon size ----------------------------------------------------------------------------------------
    @property
    def actual_bytes(self) -> int:
        """``query-balloon``'s ``actual``: RAM minus what the guest says its balloon holds."""
        return self.ram_size - (self.config.actual << PAGE_SHIFT)

    @property
    def target_bytes(self) -> int:
        return self.ram_size - (self.config.num_pages << PAGE_SHIFT)

    def set_target(self, target: int) -> None:
        """``virtio_balloon_to_target``: clamp to RAM, write num_pages, raise a config interrupt."""
        target = min(target, self.ram_size)
        if target:
            self.config.num_pages = (self.ram_size - target) >> PAGE_SHIFT
            if self.on_config_change is not None:
                self.on_config_change()

    def guest_set_actual(self, pages: int) -> None:
        """The driver writes ``actual`` in config space; a change raises BALLOON_CHANGE."""
        old = self.config.actual
        self.config.actual = pages
        if pages != old:
            self.emit("BALLOON_CHANGE", qdict((("actual", self.actual_bytes),)))

    # -- lifecycle -----------------------------------------------------------------------------------------------
    @property
    def num_queues(self) -> int:
        """inflateq, deflateq, statsq, then free_page_vq and reporting_vq only when their features are on."""
        return 3 + bool(self.free_page_hint) + bool(self.free_page_reporting)

    def driver_ok(self, features: int) -> None:
        """The driver negotiated ``features`` (masked by what the device offers), set up every queue and said
        DRIVER_OK."""
        self.guest_features = features & self.host_features
        self.device_status = STATUS_DRIVER_READY
        self.queue_sel = self.num_queues - 1

    def reset(self) -> None:
        """Virtio reset (system_reset, or the driver going away): the queue empties; QEMU >= 10.0 also clears
        the stats and last-update.  The polling interval and its timer stay."""
        self.statsq.reset()
        self.guest_features = 0
        self.device_status = 0
        self.queue_sel = 0
        self.on_config_change = None
        if self.version >= (10, 0):
            self.stats = list(self._unset)
            self.last_update = 0

    def shutdown(self) -> None:
        if self.timer is not None:
            self.timer.delete()

    def snapshot(self) -> dict:
        """This device's part of ``x-balloonlab-status``: the stats queue, and the virtio side (feature words as
        bit masks and names, device status, config space) so a client can show them without reaching into the
        emulator."""
        return {"statsq-holder": self.statsq.holder, "exchanges": self.statsq.exchanges,
                "host-features": features_view(self.host_features),
                "guest-features": features_view(self.guest_features),
                "device-status": self.device_status, "num-queues": self.num_queues,
                "config": {"num_pages": self.config.num_pages, "actual": self.config.actual,
                           "bytes": self.config.to_bytes().hex()}}


def features_view(mask: int) -> dict:
    """A feature word as ``{"mask": int, "names": [...]}`` (names by bit, see virtio.feature_names)."""
    return {"mask": mask, "names": feature_names(mask)}
