"""What recording costs: the file size of a day at a 2 s interval, and the CPU a recorder adds to a lab.

* ``recording_day_2s_mb``: megabytes of gzip a recorder writes for 24 h of a live lab polled every 2 s.  The
  traffic is what the lab's follower really makes at that interval (client/connection.py: ``guest-stats`` read every
  second, so one read in two brings a new report, the interval read every 2 s) plus one stats record per report,
  fed through the recorder's own entry points (``on_exchange``, its subscription) with host times a day long, and
  the values of a busy 512 MiB guest (``panel.reports``: faults grow, free memory and caches wander).  ``--quick``
  writes an hour and multiplies by 24 (the full run writes the whole day).  Goal < 10 MB.
* ``recording_cpu_overhead_percent``: extra CPU of a watched lab while it is recorded.  One lab on a
  ``balloonlab emulate`` subprocess (so the emulator's CPU is not ours), polled every 2 s, its follower running
  (guest-stats every second, the interval every 2 s), recorded to a .gz file; windows of 10 s with the
  recorder's tap (where every exchange passes) on and off, interleaved, CPU of the whole process
  (``time.process_time``: the loop thread does the writing) per second of each window, medians.  Goal < 5 %.
* ``recording_cpu_overhead_back_to_back_percent``: the same per exchange with ``stats()`` and
  ``polling_interval`` back to back in interleaved batches: the worst case, where nothing but exchanges runs
  (a watched lab spends most of its CPU around them: waking, scheduling, comparing).  For information.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from _common import Result, check, interleaved, median, wait_for
from panel import reports

if TYPE_CHECKING:
    import balloonlab

DAY = 86_400
INTERVAL = 2


def day_size(quick: bool) -> Result:
    import balloonlab
    from balloonlab.client.updates import LabUpdate

    seconds = 3600 if quick else DAY
    device = "/machine/peripheral-anon/device[1]"
    stats_args = {"path": device, "property": "guest-stats"}
    interval_args = {"path": device, "property": "guest-stats-polling-interval"}
    with tempfile.TemporaryDirectory() as tmp, balloonlab.emulate() as lab:
        path = Path(tmp) / "day.blab.gz"
        rec = lab.record(path)
        t0 = time.time()
        latest = None
        made = reports(seconds // INTERVAL, start=int(t0))
        for second in range(seconds):
            t = t0 + second + 0.25
            if second % INTERVAL == 0:
                latest = next(made)
                raw = {"stats": latest.raw["stats"], "last-update": int(t0) + second}
                rec._on_update(LabUpdate("stats", stats=type(latest)(raw), time=t + 0.001))
                rec.on_exchange("qom-get", interval_args, {"return": INTERVAL}, t - 0.1, 0.0004)
            rec.on_exchange("qom-get", stats_args, {"return": raw}, t, 0.0006)
        rec.stop()
        size = path.stat().st_size * (DAY / seconds)
    mb = size / 1e6
    return Result("recording_day_2s_mb", round(mb, 2), "MB", "< 10", check(mb, "<", 10),
                  detail={"measured_seconds": seconds, "reports": seconds // INTERVAL},
                  note="an hour x 24" if quick else "a whole day")


class _TapSwitch:
    """The recorder's tap (where every exchange passes) switched on and off on one lab: the same lab, emulator and
    follower either way.  The recorder's subscription stays: it writes one record per new report, alike on both
    sides."""

    def __init__(self, lab: "balloonlab.Balloon", rec: "balloonlab.Recorder") -> None:
        self.client, self.rec = lab._client, rec
        self.remove: Callable[[], None] | None = None
        rec._unhook()  # from here the benchmark switches the tap itself
        rec._detach = [lab.subscribe(rec._on_update)]

    def set(self, on: bool) -> None:
        if on and self.remove is None:
            self.remove = self.client.add_tap(self.rec)
        elif not on and self.remove is not None:
            self.remove()
            self.remove = None


def cpu_overhead(quick: bool) -> list[Result]:
    import balloonlab

    rounds, size = (6, 20) if quick else (40, 50)
    windows, window_s = (2, 2.0) if quick else (6, 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "qmp.sock")
        emulator = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", "-qmp",
                                     f"unix:{sock},server=on,wait=off", "-balloon", "virtio"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: os.path.exists(sock), 20, "the emulator's socket")
            with balloonlab.connect(sock) as lab:
                lab.polling_interval = INTERVAL
                rec = lab.record(Path(tmp) / "bench.blab.gz")
                tap = _TapSwitch(lab, rec)

                def batch(recording: bool) -> float:
                    tap.set(recording)
                    began = time.process_time()
                    for _ in range(size):
                        lab.stats()
                        lab.polling_interval  # noqa: B018  (the follower's second read)
                    return (time.process_time() - began) / (2 * size)

                def watched(recording: bool) -> float:
                    tap.set(recording)
                    began = time.process_time()
                    time.sleep(window_s)  # the follower alone works: guest-stats every second, interval every 2 s
                    return (time.process_time() - began) / window_s

                per_exchange = interleaved({"plain": lambda: batch(False), "recorded": lambda: batch(True)},
                                           rounds)
                per_second = interleaved({"plain": lambda: watched(False), "recorded": lambda: watched(True)},
                                         windows)
                tap.set(False)
                rec.stop()
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    results = []
    for key, times, unit_detail, goal in (
            ("recording_cpu_overhead_percent", per_second, "cpu_ms_per_s", "< 5"),
            ("recording_cpu_overhead_back_to_back_percent", per_exchange, "cpu_us_per_exchange", None)):
        base, with_rec = median(times["plain"]), median(times["recorded"])
        percent = round((with_rec / base - 1) * 100, 1)
        scale = 1e3 if unit_detail == "cpu_ms_per_s" else 1e6
        results.append(Result(key, percent, "%", goal, check(percent, "<", 5) if goal else None,
                              detail={f"plain_{unit_detail}": round(base * scale, 2),
                                      f"recorded_{unit_detail}": round(with_rec * scale, 2)}))
    return results


def run(quick: bool = False) -> list[Result]:
    return [day_size(quick), *cpu_overhead(quick)]


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(result.key, result.value, result.unit, result.goal, result.met, result.detail, result.note)
