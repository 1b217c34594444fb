"""The front end's costs: one stats report through ``BalloonPanel``, and the memory of 24 h of history.

* ``panel_update_cpu_ms``: CPU milliseconds the panel's own thread spends applying one ``LabUpdate`` of kind
  "stats" (stats table, last-update view, plot, doctor), as the panel itself accounts it
  (``BalloonPanel.update_cost()``, ``time.thread_time`` around each batch).  Updates are fed one at a time
  (``max_rate`` raised so none is batched with another), each a new report (fresh ``last-update``, moving values),
  on a panel of an emulated virtual-clock lab outside a kernel (the widgets' comms go nowhere, the Python work is
  the same).  Median over the reports.  Goal < 1 ms.
* ``history_24h_mb``: growth of traced Python memory (``tracemalloc``) for a ``History`` holding 86 400 samples
  of realistic 16-stat reports (a day at 1 s), with ``History.nbytes`` for comparison.  Goal < 10 MB.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc

from _common import Result, check, median

BASE = {"stat-swap-in": 0, "stat-swap-out": 0, "stat-major-faults": 12, "stat-minor-faults": 700,
        "stat-free-memory": 459_816_960, "stat-total-memory": 487_280_640, "stat-available-memory": 459_694_080,
        "stat-disk-caches": 2_478_080, "stat-htlb-pgalloc": 0, "stat-htlb-pgfail": 0, "stat-oom-kills": 0,
        "stat-alloc-stalls": 0, "stat-async-scans": 0, "stat-direct-scans": 0, "stat-async-reclaims": 0,
        "stat-direct-reclaims": 0}


def reports(n: int, start: int = 1_795_667_711, seed: int = 7):
    """``n`` GuestStats as a busy 512 MiB guest would send them at 1 s: faults grow, free memory wanders."""
    from balloonlab.stats import GuestStats

    rng = random.Random(seed)
    stats = dict(BASE)
    for i in range(n):
        stats["stat-minor-faults"] += rng.randrange(0, 40)
        stats["stat-free-memory"] += rng.randrange(-64, 65) * 4096
        stats["stat-available-memory"] = stats["stat-free-memory"] - 122_880 + stats["stat-disk-caches"]
        stats["stat-disk-caches"] += rng.randrange(-4, 9) * 4096
        yield GuestStats({"stats": dict(stats), "last-update": start + i})


def panel_update(quick: bool) -> Result:
    import balloonlab
    from balloonlab.client.updates import LabUpdate
    from balloonlab.widgets import BalloonPanel

    n = 60 if quick else 400
    with balloonlab.emulate(clock="virtual") as lab:
        panel = BalloonPanel(lab, max_rate=1e6)
        try:
            panel.wait_idle()
            per_update = []
            for stats in reports(n):
                before = panel.update_cost()["cpu_ms"]
                panel._on_update(LabUpdate("stats", stats=stats))  # what lab.subscribe delivers
                panel.wait_idle()
                per_update.append(panel.update_cost()["cpu_ms"] - before)
        finally:
            panel.close()
    value = median(per_update[5:])
    return Result("panel_update_cpu_ms", round(value, 3), "ms CPU", "< 1", check(value, "<", 1.0),
                  {"updates": len(per_update), "p90_ms": round(sorted(per_update)[int(len(per_update) * 0.9)], 3)},
                  "one stats report per batch, panel thread CPU")


def history_memory(quick: bool) -> Result:
    from balloonlab.client.history import History

    n = 86_400
    samples = list(reports(n))  # built before tracing: they are the lab's, not the history's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = History()
        t = time.process_time()
        for i, stats in enumerate(samples):
            history.add(1_795_667_711.5 + i, stats, 1, 536_870_912)
        cpu = time.process_time() - t
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    mb = grown / 1e6
    return Result("history_24h_mb", round(mb, 2), "MB", "< 10", check(mb, "<", 10.0),
                  {"samples": len(history), "nbytes_mb": round(history.nbytes / 1e6, 2),
                   "add_us_per_sample_traced": round(cpu / n * 1e6, 2)},
                  "86 400 samples of 16 stats (tracemalloc)")


def run(quick: bool = False) -> list[Result]:
    return [panel_update(quick), history_memory(quick)]
