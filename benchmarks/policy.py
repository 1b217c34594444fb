"""The policy lab's speed: CPU seconds for a simulated day of a host under a policy, and where they go.

* ``policy_day_4vms_cpu_s``: ``run(host, MomPolicy(), duration="24h", tick="10s")`` on
  ``emulate_host(memory="3G", vms=4, vm_memory="1G", workloads="mixed")``: 8 640 ticks.  CPU seconds of the whole
  process (``time.process_time``: the VMs run on balloonlab's background thread, the policy on this one).
  Goal <= 10 s.
* ``policy_day_20vms_cpu_s``: the same with 20 VMs of 1 GiB on 15 GiB.  Goal <= 60 s.

Where the time goes (``detail``, shares of the MomPolicy day, measured in the same run on identical hosts):
``emulator`` is the host alone advancing the same day in 10 s steps with the labs' histories off (the guests,
their workloads, the stats exchanges at each poll); ``observe`` is what a run adds when its policy decides nothing
(NoPolicy: reading every VM each tick, building the views, the score and the rows); ``policy_and_targets`` is the
rest: ``decide`` and every ``set_target`` (a QMP ``balloon`` command, then the guest's driver moving the balloon in
1 MiB steps).
``--quick`` runs 1 h and scales by 24.
"""

from __future__ import annotations

import time

from _common import Result, check


def _cpu(vms: int, hours: float, what: str) -> float:
    import balloonlab
    from balloonlab.policy import MomPolicy, NoPolicy, run

    host = balloonlab.emulate_host(memory=f"{max(3, vms * 3 // 4)}G", vms=vms, vm_memory="1G",
                                   workloads="mixed", seed=1)
    try:
        started = time.process_time()
        if what == "bare":
            for lab in host.vms:
                lab.polling_interval = 10
                lab.history.enabled = False  # as during a run: no lab follower replays the reports
            for _ in range(int(hours * 360)):
                host.advance(10)
        else:
            run(host, MomPolicy() if what == "mom" else NoPolicy(), duration=f"{hours}h", tick="10s")
        return (time.process_time() - started) * 24 / hours
    finally:
        host.close()


def _day(vms: int, hours: float, goal: float) -> Result:
    bare, nopolicy, mom = (_cpu(vms, hours, what) for what in ("bare", "none", "mom"))
    shares = {"emulator": bare / mom, "observe": max(0.0, nopolicy - bare) / mom,
              "policy_and_targets": max(0.0, mom - nopolicy) / mom}
    return Result(f"policy_day_{vms}vms_cpu_s", round(mom, 2), "s CPU", f"<= {goal:g}", check(mom, "<=", goal),
                  {"where": {k: round(v, 3) for k, v in shares.items()},
                   "cpu_s": {"emulator": round(bare, 2), "nopolicy": round(nopolicy, 2), "mom": round(mom, 2)}},
                  f"MomPolicy, 10 s tick{', 1 h measured, x24' if hours < 24 else ''}")


def run(quick: bool = False) -> list[Result]:
    hours = 1.0 if quick else 24.0
    return [_day(4, hours, 10.0), _day(20, hours, 60.0)]
