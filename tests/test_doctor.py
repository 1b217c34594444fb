"""The doctor's verdicts, one per thing users trip over (docs/qemu-behaviour.md, C), from samples alone."""

from __future__ import annotations

import datetime as dt

import pytest

from balloonlab.client.doctor import Diagnosis, diagnose, stale_after
from balloonlab.stats import UNSET, WIRE_ORDER_10, WIRE_ORDER_16, GuestStats

NOW = 1_764_130_000


def sample(last_update: int = NOW, unset: tuple[str, ...] = (), order: tuple[str, ...] = WIRE_ORDER_10) -> GuestStats:
    stats = {f"stat-{k}": (UNSET if k in unset else 1000 + i) for i, k in enumerate(order)}
    return GuestStats({"stats": stats, "last-update": last_update})


NEVER = sample(0, unset=WIRE_ORDER_10)


@pytest.mark.parametrize("stats, interval, now, running, verdict, severity", [
    (sample(NOW - 1), 2, NOW, True, "healthy", "ok"),
    (sample(NOW - 1), 0, NOW, True, "polling-off", "warning"),
    (NEVER, 0, NOW, True, "polling-off", "warning"),
    (NEVER, 2, NOW, True, "never-reported", "error"),
    (NEVER, 2, NOW, False, "paused", "warning"),
    (sample(NOW - 600), 2, NOW, False, "paused", "warning"),
    (sample(NOW - 60), 2, NOW, True, "stale", "error"),
    (sample(NOW, unset=WIRE_ORDER_10), 2, NOW, True, "empty-report", "warning"),
    (sample(NOW, unset=("available-memory", "disk-caches")), 2, NOW, True, "partial", "warning"),
])
def test_verdicts(stats, interval, now, running, verdict, severity):
    d = diagnose(stats, interval, now=now, running=running)
    assert isinstance(d, Diagnosis)
    assert (d.verdict, d.severity) == (verdict, severity)
    assert d.message and verdict in str(d)
    assert d.ok == (severity == "ok")


def test_stale_threshold_scales_with_the_interval():
    # 2.5 intervals + 2 s of slack for whole-second stamps
    assert diagnose(sample(NOW - 26), 10, now=NOW).verdict == "healthy"
    assert diagnose(sample(NOW - 28), 10, now=NOW).verdict == "stale"
    assert stale_after(10) == 27.0


def test_newer_stats_unset_on_an_old_guest_is_healthy_with_a_note():
    old_guest = sample(NOW, unset=tuple(k for k in WIRE_ORDER_16 if k not in WIRE_ORDER_10), order=WIRE_ORDER_16)
    d = diagnose(old_guest, 2, now=NOW)
    assert d.verdict == "healthy"
    assert "oom-kills" in d.message and "normal" in d.message


def test_hugetlb_counters_are_optional():
    # virtio-win fills tags 0-7 only; a Linux guest without CONFIG_HUGETLB_PAGE does the same
    d = diagnose(sample(NOW, unset=("htlb-pgalloc", "htlb-pgfail")), 2, now=NOW)
    assert d.verdict == "healthy" and "htlb-pgalloc" in d.message


def test_an_old_driver_is_partial_and_says_what_used_memory_loses():
    d = diagnose(sample(NOW, unset=("available-memory", "disk-caches", "htlb-pgalloc", "htlb-pgfail")), 2, now=NOW)
    assert d.verdict == "partial"
    assert "total - free" in d.message and "4.6" in d.message


def test_messages_say_what_to_do():
    assert "modprobe virtio_balloon" in diagnose(NEVER, 2, now=NOW).message
    assert "Balloon service" in diagnose(NEVER, 2, now=NOW).message
    assert "cont" in diagnose(NEVER, 2, now=NOW, running=False, run_state="prelaunch").message
    assert "prelaunch" in diagnose(NEVER, 2, now=NOW, running=False, run_state="prelaunch").message
    assert "lab.polling_interval" in diagnose(NEVER, 0, now=NOW).message
    assert "re-arms" in diagnose(sample(NOW - 60), 2, now=NOW).message


def test_now_accepts_an_aware_datetime():
    now = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    assert diagnose(sample(NOW - 60), 2, now=now).verdict == "stale"


def test_reprs():
    d = diagnose(NEVER, 2, now=NOW)
    assert "never-reported" in d._repr_html_() and "error" in d._repr_html_()
