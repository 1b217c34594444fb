"""Emulator-only figures: the virtual clock's speed and the time to the first stats of ``balloonlab.emulate()``.

* ``virtual_clock_24h_cpu_s``: CPU seconds (``time.process_time``, the whole process: the emulator runs on
  balloonlab's background thread) for ``lab.advance("24h")`` with the linux guest answering 1 s polling
  (86 400 polls, 172 800 request/report exchanges) and the lab's history recording every report (the default).
  Goal <= 1 s.  ``--quick`` advances 1 h and scales by 24.
* ``virtual_clock_24h_unrecorded_cpu_s``: the same with ``history=False``: the emulator alone (for information).
* ``first_stats_emulated_ms``: wall time from ``balloonlab.emulate()`` to the first ``stats()`` that holds a
  value, in a warm process (imports done, one lab made and closed before), median of several.  Measured for
  the default real clock (the emulated guest's driver loads 1 s of VM time after power-on, like the boot of the
  real tiny guest, so the boot report exists only after that second) and for ``clock="virtual"`` (start() steps
  through the boot).  Goal < 100 ms.
* ``first_stats_emulated_cold_ms``: the same (virtual clock) in a fresh interpreter, timed from before
  ``import balloonlab``: what the first cell of a notebook pays (for information).
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import Result, check, median

#: Run in a fresh interpreter: the clock starts before ``import balloonlab`` (a notebook's first cell).
COLD = """
import time
t = time.perf_counter()
import balloonlab
lab = balloonlab.emulate(clock="virtual")
while lab.stats().get("free-memory") is None:
    time.sleep(0.002)
print((time.perf_counter() - t) * 1e3)
lab.close()
"""


def _first_stats(clock: str) -> float:
    import balloonlab

    t = time.perf_counter()
    lab = balloonlab.emulate(clock=clock)
    try:
        while lab.stats().get("free-memory") is None:
            time.sleep(0.002)
        return time.perf_counter() - t
    finally:
        lab.close()


def first_stats_cold(quick: bool) -> Result:
    samples = []
    for _ in range(2 if quick else 5):
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, timeout=120, check=True)
        samples.append(float(out.stdout.split()[-1]))
    value = median(samples)
    return Result("first_stats_emulated_cold_ms", round(value, 1), "ms", None, None,
                  {"samples_ms": [round(s, 1) for s in samples]},
                  "fresh interpreter, from `import balloonlab` (clock='virtual')")


def _advance_cpu(hours: int, history: bool) -> tuple[float, int, int]:
    """CPU seconds of ``advance(hours)`` at 1 s polling; exchanges counted from the trace; samples recorded."""
    import balloonlab

    with balloonlab.emulate(clock="virtual", timeout=120, history=history) as lab:
        lab.polling_interval = 1
        before, samples = lab.trace()["next"], len(lab.history)
        t = time.process_time()
        lab.advance(f"{hours}h")
        cpu = time.process_time() - t
        return cpu, lab.trace()["next"] - before, len(lab.history) - samples


def virtual_clock(quick: bool) -> list[Result]:
    hours = 1 if quick else 24
    got: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(1 if quick else 3):
        for history in (True, False):  # alternate, so a busy phase of the machine hits both alike
            cpu, exchanges, samples = _advance_cpu(hours, history)
            got[history].append(cpu * 24 / hours)
            if history:
                recorded = samples
    recorded_value, unrecorded = median(got[True]), median(got[False])
    note = "linux guest, polling 1 s" + (", 1 h measured, x24" if quick else "")
    return [
        Result("virtual_clock_24h_cpu_s", round(recorded_value, 3), "s CPU", "<= 1", check(recorded_value, "<=", 1.0),
               {"hours_advanced": hours, "exchanges": exchanges, "samples_recorded": recorded,
                "samples": [round(s, 3) for s in got[True]]}, note + ", history recording every report"),
        Result("virtual_clock_24h_unrecorded_cpu_s", round(unrecorded, 3), "s CPU", None, None,
               {"samples": [round(s, 3) for s in got[False]]}, note + ", history=False"),
    ]


def first_stats(quick: bool) -> list[Result]:
    reps = 3 if quick else 9
    _first_stats("virtual")  # warm: imports, the background loop
    got: dict[str, list[float]] = {"real": [], "virtual": []}
    for _ in range(reps):
        for clock in ("virtual", "real"):
            got[clock].append(_first_stats(clock))
    real, virtual = median(got["real"]) * 1e3, median(got["virtual"]) * 1e3
    return [
        Result("first_stats_emulated_ms", round(real, 1), "ms", "< 100", check(real, "<", 100),
               {"samples_ms": [round(s * 1e3, 1) for s in got["real"]]},
               "default clock='real': includes the emulated guest's 50 ms boot (emulate()'s boot_delay)"),
        Result("first_stats_emulated_virtual_ms", round(virtual, 1), "ms", "< 100", check(virtual, "<", 100),
               {"samples_ms": [round(s * 1e3, 1) for s in got["virtual"]]}, "clock='virtual'"),
    ]


def run(quick: bool = False) -> list[Result]:
    return [*virtual_clock(quick), *first_stats(quick), first_stats_cold(quick)]
