"""An emulated host of many VMs (``balloonlab.emulate_host``): how fast it starts, a day of it, idle cost.

* ``host_100_ready_s``: wall seconds from ``emulate_host(vms=100)`` (virtual clock, 100 emulated QEMUs each on its
  own socket, each with a connected lab) to its return, median of 3 in a warm process.  Goal < 2 s.  For scale,
  ``detail`` has the same 100 VMs made one by one with ``balloonlab.emulate()``, measured in the same run.
* ``host_20_24h_cpu_s``: CPU seconds (``time.process_time``: the whole process) of ``host.advance("24h")`` on a
  host of 20 VMs with mixed workloads, each polled every 10 s (17 280 reports per VM, the host's memory
  accounted every 5 s).  Goal <= 20 s.  ``--quick`` advances 1 h and scales by 24.
* ``host_100_idle_cpu_percent``: CPU share of one core of a host of 100 idle VMs on the real clock, each polled
  every second, over a window in which the main thread sleeps; ``detail`` has the same process's share with the
  host closed (baseline, measured in the same run).  Goal < 15 %.
"""

from __future__ import annotations

import time

from _common import Result, check, median


def ready(quick: bool) -> Result:
    import balloonlab

    n = 10 if quick else 100
    balloonlab.emulate_host(vms=1).close()  # imports and the background loop: warm
    samples, singles = [], []
    for _ in range(1 if quick else 3):
        t = time.perf_counter()
        host = balloonlab.emulate_host(vms=n, memory=f"{n}G")
        samples.append(time.perf_counter() - t)
        host.close()
        t = time.perf_counter()
        labs = [balloonlab.emulate(clock="virtual") for _ in range(n)]
        singles.append(time.perf_counter() - t)
        for lab in labs:
            lab.close()
    scale = 100 / n
    value = median(samples) * scale
    return Result("host_100_ready_s", round(value, 3), "s", "< 2", check(value, "<", 2.0),
                  {"samples_s": [round(s * scale, 3) for s in samples],
                   "100_emulate_calls_s": round(median(singles) * scale, 3)},
                  f"{n} VMs{' scaled to 100' if quick else ''}")


def day(quick: bool) -> Result:
    import balloonlab

    hours = 1 if quick else 24
    with balloonlab.emulate_host(vms=20, memory="24G", vm_memory="1G", workloads="mixed", seed=1) as host:
        for lab in host.vms:
            lab.polling_interval = 10
        t = time.process_time()
        host.advance(f"{hours}h")
        cpu = (time.process_time() - t) * 24 / hours
        swap = host.usage().swap_used
    return Result("host_20_24h_cpu_s", round(cpu, 2), "s CPU", "<= 20", check(cpu, "<=", 20.0),
                  {"hours_run": hours, "swap_used_at_end": swap}, "20 VMs, mixed workloads, polling 10 s")


def _share(window: float) -> float:
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    time.sleep(window)
    return (time.process_time() - t_cpu) / (time.perf_counter() - t_wall)


def idle(quick: bool) -> Result:
    import balloonlab

    rounds, window = (1, 1.5) if quick else (3, 10.0)
    shares, baseline = [], []
    for _ in range(rounds):
        baseline.append(_share(window / 2))
        with balloonlab.emulate_host(vms=100, memory="100G", clock="real") as host:
            for lab in host.vms:
                lab.polling_interval = 1
            time.sleep(1.5)  # every guest polled once
            shares.append(_share(window))
    value = median(shares) * 100
    return Result("host_100_idle_cpu_percent", round(value, 2), "% of a core", "< 15", check(value, "<", 15.0),
                  {"baseline_percent": round(median(baseline) * 100, 2),
                   "samples_percent": [round(s * 100, 2) for s in shares]},
                  "100 idle VMs, real clock, polled every 1 s")


def run(quick: bool = False) -> list[Result]:
    return [ready(quick), day(quick), idle(quick)]
