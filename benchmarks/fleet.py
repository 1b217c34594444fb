"""A fleet of N emulated labs in one process, each device polling its linux guest every second (real clock).

Figure: CPU share of one core = process CPU seconds (``time.process_time``: the emulators and the clients all
run on balloonlab's one background thread) / wall seconds, over a window in which the main thread only sleeps.
Measured at N = 10 and 100, without a subscriber (nobody watches and history is off, ``emulate(history=False)``:
the labs' clients stay idle and only the emulated devices and guests work) and with one no-op subscriber per lab
(each lab's follower then reads ``guest-stats`` every 0.5 s and the interval every 2 s; a default lab, which
records history, costs the same).  Windows of the two modes alternate; the figure is the median.  The figures
are absolute, not ratios: they include what the process costs with no lab open, which is reported beside them
(``fleet_baseline_cpu_percent``, one window before each fleet size), not subtracted.
Goal: N = 100 under 10 % (without a subscriber).
"""

from __future__ import annotations

import time

from _common import Result, check, median


def _share(window: float) -> float:
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    time.sleep(window)
    return (time.process_time() - t_cpu) / (time.perf_counter() - t_wall)


def _fleet(n: int, rounds: int, window: float) -> dict[str, float]:
    import balloonlab

    labs = []
    unsubs = []
    try:
        for _ in range(n):
            lab = balloonlab.emulate(history=False)
            lab.polling_interval = 1
            labs.append(lab)
        time.sleep(1.5)  # every guest booted (1 s of VM time) and polled once
        got: dict[str, list[float]] = {"idle": [], "subscribed": []}
        for r in range(rounds):  # alternate which mode goes first
            for mode in (("idle", "subscribed") if r % 2 == 0 else ("subscribed", "idle")):
                if mode == "subscribed":
                    unsubs = [lab.subscribe(lambda update: None) for lab in labs]
                    time.sleep(0.5)  # followers started
                got[mode].append(_share(window))
                for unsub in unsubs:
                    unsub()
                unsubs = []
        return {mode: median(v) for mode, v in got.items()}
    finally:
        for unsub in unsubs:
            unsub()
        for lab in labs:
            lab.close()


def run(quick: bool = False) -> list[Result]:
    rounds, window = (1, 1.5) if quick else (4, 10.0)
    baseline = []
    results = []
    for n in (10, 100):
        baseline.append(_share(window / 2))
        shares = _fleet(n, rounds, window)
        idle, sub = shares["idle"] * 100, shares["subscribed"] * 100
        goal = "< 10" if n == 100 else None
        results.append(Result(f"fleet_{n}_cpu_percent", round(idle, 2), "% of one core", goal,
                              check(idle, "<", 10) if goal else None, {}, "no subscriber"))
        results.append(Result(f"fleet_{n}_subscribed_cpu_percent", round(sub, 2), "% of one core", None, None, {},
                              "one no-op subscriber per lab (followers poll)"))
    results.append(Result("fleet_baseline_cpu_percent", round(median(baseline) * 100, 2), "% of one core", None,
                          None, {}, "same process, no labs open"))
    return results
