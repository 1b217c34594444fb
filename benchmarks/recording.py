"""What recording costs: the file size of a day at a 2 s interval, and the CPU a recorder adds to a lab.

* ``recording_day_2s_mb``: megabytes of gzip a recorder writes for 24 h of a live lab polled every 2 s.  The
  traffic is what the lab's follower really makes at that interval (client/connection.py: ``guest-stats`` read every
  second, so one read in two brings a new report, the interval read every 2 s) plus one stats record per report,
  fed through the recorder's own entry points (``on_exchange``, its subscription) with host times a day long, and
  the values of a busy 512 MiB guest (``panel.reports``: faults grow, free memory and caches wander).  ``--quick``
  writes an hour and multiplies by 24 (the full run writes the whole day).  Goal < 10 MB.
* ``recording_cpu_overhead_percent``: extra CPU seconds per QMP exchange with the recorder's tap on.  One lab on a
  ``balloonlab emulate`` subprocess (so the emulator's CPU is not ours), recorded to a .gz file; the follower's
  pattern (``stats()``, then ``polling_interval``) runs back to back in interleaved batches with the tap on and
  off, CPU measured with ``time.process_time`` (every thread of this process: the loop thread does the writing).
  Back to back is the worst case: a real follower idles between exchanges, and idling costs nothing.  Median of
  the batches' ratios' inputs (per-exchange medians).  Goal < 5 %.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Result, check, interleaved, median, wait_for
from panel import reports

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


def cpu_overhead(quick: bool) -> Result:
    import balloonlab

    rounds, size = (6, 20) if quick else (40, 50)
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
                client = lab._client
                remove_tap = None

                def batch(recording: bool) -> float:
                    # The same lab and emulator either way; only the recorder's tap (where every exchange
                    # passes) is on or off.  Its subscription stays: it writes one record per new report, which
                    # both sides see alike.
                    nonlocal remove_tap
                    if recording and remove_tap is None:
                        remove_tap = client.add_tap(rec)
                    elif not recording and remove_tap is not None:
                        remove_tap()
                        remove_tap = None
                    began = time.process_time()
                    for _ in range(size):
                        lab.stats()
                        lab.polling_interval  # noqa: B018  (the follower's second read)
                    return (time.process_time() - began) / (2 * size)

                rec._unhook()  # from here the benchmark switches the tap itself
                rec._detach = [lab.subscribe(rec._on_update)]
                times = interleaved({"plain": lambda: batch(False), "recorded": lambda: batch(True)}, rounds)
                if remove_tap is not None:
                    remove_tap()
                rec.stop()
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    base, with_rec = median(times["plain"]), median(times["recorded"])
    percent = (with_rec / base - 1) * 100
    return Result("recording_cpu_overhead_percent", round(percent, 1), "%", "< 5", check(percent, "<", 5),
                  detail={"plain_cpu_us_per_exchange": round(base * 1e6, 1),
                          "recorded_cpu_us_per_exchange": round(with_rec * 1e6, 1), "rounds": rounds,
                          "batch": size})


def run(quick: bool = False) -> list[Result]:
    return [day_size(quick), cpu_overhead(quick)]


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(result.key, result.value, result.unit, result.goal, result.met, result.detail, result.note)
