"""The policy lab on an emulated host: built-in policies scored on a simulated day, guard rails, determinism.

One overcommitted day (2 GiB of host RAM for four 1 GiB VMs running the mixed workloads, 6 simulated hours) is run
once per module for each built-in policy; the tests read its scores.
"""

from __future__ import annotations

import time

import pytest

import balloonlab
from balloonlab.errors import PolicyError
from balloonlab.policy import FixedPolicy, MomPolicy, NoPolicy, Policy, PolicyRun, ProxmoxPolicy, compare, run
from tests.helpers import clean_loop  # noqa: F401  (autouse)

MiB = 1 << 20
DAY = "6h"


def overcommitted(seed: int = 1) -> balloonlab.Host:
    return balloonlab.emulate_host(memory="2G", vms=4, vm_memory="1G", workloads="mixed", seed=seed)


@pytest.fixture(scope="module")
def day() -> dict[str, PolicyRun]:
    runs = {}
    for policy in (NoPolicy(), MomPolicy(), ProxmoxPolicy()):
        with overcommitted() as host:
            runs[policy.label] = run(host, policy, duration=DAY, tick="10s")
    return runs


def test_no_policy_on_an_overcommitted_mixed_host_is_overcommitted(day):
    score = day["NoPolicy"].score
    assert score["overcommit_seconds"] > 0
    assert score["host_swap_peak"] > 0
    assert score["target_changes"] == 0


@pytest.mark.parametrize("name", ["MomPolicy", "ProxmoxPolicy"])
def test_builtin_policies_cut_host_use_and_overcommit_without_more_oom_kills(day, name):
    base, score = day["NoPolicy"].score, day[name].score
    assert score["host_used_avg"] < base["host_used_avg"]
    assert score["overcommit_seconds"] < base["overcommit_seconds"]
    assert score["oom_kills"] <= base["oom_kills"]
    assert score["target_changes"] > 0


def test_the_score_has_every_documented_figure(day):
    for key in ("host_used_avg", "host_used_peak", "overcommit_seconds", "host_swap_peak", "oom_kills",
                "alloc_stalls", "guest_swap_out", "target_changes"):
        assert key in day["MomPolicy"].score
    assert day["MomPolicy"].score["seconds"] == 6 * 3600


def test_the_dataframe_has_one_row_per_tick_and_vm(day):
    df = day["MomPolicy"].to_dataframe()
    assert len(df) == 6 * 360 * 4
    assert {"time", "vm", "target", "actual", "rss", "free", "available", "host_used"} <= set(df.columns)
    assert sorted(df["vm"].unique()) == ["vm0", "vm1", "vm2", "vm3"]
    # MoM never moves a VM more than 5 % of its balloon in one tick
    for d in day["MomPolicy"].decisions:
        assert abs(d.target - d.before) <= d.before * 0.05 + 1


def test_proxmox_moves_a_vm_at_most_100_mib_per_tick_and_never_below_its_minimum(day):
    decisions = day["ProxmoxPolicy"].decisions
    assert decisions
    for d in decisions:
        assert abs(d.target - d.before) <= 100 * MiB
        assert d.target >= 256 * MiB  # a quarter of 1 GiB


def test_compare_puts_scores_side_by_side(day):
    frame = compare(list(day.values()), plot=False)
    assert list(frame.columns) == ["NoPolicy", "MomPolicy", "ProxmoxPolicy"]
    assert frame.loc["overcommit_seconds", "NoPolicy"] == day["NoPolicy"].score["overcommit_seconds"]


def test_the_plot_is_a_bqplot_widget_of_the_host_and_each_vm(day):
    import bqplot

    box = day["MomPolicy"].plot()
    host_fig, vm_fig = box.children
    assert isinstance(host_fig, bqplot.Figure)
    assert host_fig.marks[0].labels == ["host RAM", "used", "swap"]
    assert len(vm_fig.marks) == 8  # actual and target for each of four VMs


def test_shrinking_every_guest_to_64_mib_causes_stalls_or_oom_kills_and_they_are_scored():
    scores = {}
    for policy in (NoPolicy(), FixedPolicy("64M")):
        with balloonlab.emulate_host(memory="4G", vms=4, vm_memory="1G", workloads="mixed", seed=2) as host:
            result = run(host, policy, duration="2h", tick="10s")
            scores[policy.label] = result.score
    base, shrunk = scores["NoPolicy"], scores["FixedPolicy"]
    assert base["oom_kills"] == base["alloc_stalls"] == 0
    assert shrunk["oom_kills"] + shrunk["alloc_stalls"] > 0
    assert shrunk["guest_swap_out"] > 0
    assert shrunk["targets_below_use"] > 0
    assert any("below what its guest uses" in w for w in result.warnings)


def test_the_same_seed_gives_the_same_score_exactly():
    results = []
    for _ in range(2):
        with overcommitted(seed=5) as host:
            results.append(run(host, MomPolicy(), duration="1h", tick="10s"))
    a, b = results
    assert a.score == b.score
    assert a.decisions == b.decisions
    assert a.to_dataframe().equals(b.to_dataframe())


def test_a_dry_run_records_decisions_and_sets_no_target():
    with overcommitted() as host:
        result = run(host, FixedPolicy("512M"), duration="1m", tick="10s", dry_run=True)
        assert [lab.target for lab in host.vms] == [None] * 4
        assert all(lab.actual == 1 << 30 for lab in host.vms)
    assert result.decisions and not any(d.applied for d in result.decisions)
    assert "would go to" in str(result.decisions[0])


class Step(Policy):
    """Asks for 300 MiB less every tick."""

    def decide(self, view):
        return {name: vm.actual - 300 * MiB for name, vm in view.vms.items()}

    def max_change(self, vm):
        return 20 * MiB


def test_a_run_never_moves_a_vm_faster_than_the_policys_own_limit():
    with overcommitted() as host:
        result = run(host, Step(), duration="1m", tick="10s")
    assert result.decisions
    for d in result.decisions:
        assert d.asked == d.before - 300 * MiB
        assert d.target == d.before - 20 * MiB


# --- guard rails ------------------------------------------------------------------------------------------------

class Raises(Policy):
    def decide(self, view):
        if view.tick == 3:
            raise ZeroDivisionError("division by zero")
        return {}


class Answers(Policy):
    def __init__(self, answer):
        self.answer = answer

    def decide(self, view):
        return self.answer if view.tick == 2 else {}


class Slow(Policy):
    def decide(self, view):
        time.sleep(0.5)
        return {}


def test_a_policy_that_raises_stops_the_run_with_the_tick_and_keeps_what_it_recorded():
    with overcommitted() as host:
        with pytest.raises(PolicyError, match=r"Raises.decide\(\) raised ZeroDivisionError: division by zero "
                                              r"at tick 3 \(30 s into the run\)") as info:
            run(host, Raises(), duration="1h", tick="10s")
        assert info.value.tick == 3 and info.value.vm is None
        kept = info.value.run
        assert kept.score["ticks"] == 4
        assert len(kept.to_dataframe()) == 16
        assert kept.error is info.value
        host.advance("10s")  # the host is still fine
        assert host.usage().total == 2 << 30


@pytest.mark.parametrize("answer, message, vm", [
    ({"vm9": 512 * MiB}, "set a target for 'vm9' at tick 2 .*which is not a VM of this run \\(vm0, vm1, vm2, vm3\\)",
     "vm9"),
    ({"vm1": -5}, "gave vm1 the target -5 at tick 2 .*must be positive", "vm1"),
    ({"vm2": 512.5 * MiB}, "gave vm2 the target 537395200.0 at tick 2 .*whole bytes \\(int\\)", "vm2"),
    ({"vm0": "512M"}, "gave vm0 the target '512M' at tick 2", "vm0"),
    ([512 * MiB], "returned a list at tick 2 .*return a dict", None),
])
def test_a_policy_answering_nonsense_gets_an_error_naming_the_tick_and_the_vm(answer, message, vm):
    with overcommitted() as host:
        with pytest.raises(PolicyError, match=message) as info:
            run(host, Answers(answer), duration="1h", tick="10s")
        assert info.value.tick == 2 and info.value.vm == vm
        assert info.value.run.score["ticks"] == 3
        assert [lab.target for lab in host.vms] == [None] * 4


def test_a_policy_that_takes_too_long_per_tick_is_stopped():
    with overcommitted() as host:
        with pytest.raises(PolicyError, match=r"Slow.decide\(\) took .* s at tick 0 .*a tick allows 0.1 s"):
            run(host, Slow(), duration="1h", tick="10s", decide_limit=0.1)


def test_run_refuses_what_is_not_a_policy_or_a_host():
    with overcommitted() as host:
        with pytest.raises(balloonlab.BalloonError, match=r"must be a balloonlab\.policy\.Policy"):
            run(host, lambda view: {}, duration="1h")  # type: ignore[arg-type]
    with pytest.raises(balloonlab.BalloonError, match="needs a host"):
        run(42, NoPolicy())


class CtrlC(Policy):
    def decide(self, view):
        if view.tick == 5:
            raise KeyboardInterrupt  # what Ctrl-C in the notebook does to a simulated run
        return {}


def test_ctrl_c_stops_a_simulated_run_which_returns_what_it_has():
    with overcommitted() as host:
        result = run(host, CtrlC(), duration="1h", tick="10s")
    assert result.interrupted and result.error is None
    assert result.score["ticks"] == 6
    assert "(interrupted)" in repr(result)


def test_a_simulated_run_leaves_the_host_clock_at_its_end():
    with overcommitted() as host:
        start = host.wall_time()
        run(host, NoPolicy(), duration="10m", tick="10s")
        assert host.wall_time() - start == pytest.approx(600)


def test_a_view_reads_the_wire_stats_as_guest_stats_would():
    from balloonlab.policy import VMView
    from balloonlab.stats import UNSET, GuestStats

    raw = {"stats": {"stat-swap-out": 4096, "stat-free-memory": 300 * MiB, "stat-available-memory": UNSET},
           "last-update": 1700000000}
    lazy = VMView("vm0", 900 * MiB, 1024 * MiB, None, None, raw=raw)
    parsed = VMView("vm0", 900 * MiB, 1024 * MiB, None, None, stats=GuestStats(raw))
    for view in (lazy, parsed):
        assert view.valid
        assert view.stat("swap-out") == 4096 and view.stat("available-memory") is None
        assert view.available == view.free == 300 * MiB and view.used == 600 * MiB
    assert lazy.stats == parsed.stats
    never = VMView("vm1", 1024 * MiB, 1024 * MiB, None, None, raw={"stats": {"stat-free-memory": UNSET},
                                                                    "last-update": 0})
    assert not never.valid and never.used is None
