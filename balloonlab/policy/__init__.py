"""The policy lab: write a ballooning policy, replay a day of a host in seconds, score it, run it for real.

    from balloonlab.policy import Policy, NoPolicy, MomPolicy, ProxmoxPolicy, run, compare
    host = balloonlab.emulate_host(memory="3G", vms=4, vm_memory="1G", workloads="mixed", seed=1)
    result = run(host, MomPolicy(), duration="24h", tick="10s")
    result.score; result.to_dataframe(); result.plot()

Layers: ``view`` (what a policy sees), ``base``/``mom``/``proxmox`` (policies), ``sources`` (an emulated host or
real labs), ``runs`` (the engine, its guard rails, the results), ``score``, ``plot``.  It uses the client and the
host; the front ends (``%balloon policy``) use it.
"""

from .base import FixedPolicy, NoPolicy, Policy
from .mom import MomPolicy
from .proxmox import ProxmoxPolicy
from .runs import Decision, LivePolicyRun, PolicyRun, compare, run
from .view import HostView, View, VMView

__all__ = ["Policy", "NoPolicy", "FixedPolicy", "MomPolicy", "ProxmoxPolicy", "run", "compare", "PolicyRun",
           "LivePolicyRun", "Decision", "View", "HostView", "VMView"]
