"""Guest models and their memory: plausible, consistent, reproducible numbers, and each model's behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from balloonlab.emulator.clock import Clock
from balloonlab.emulator.config import BalloonSpec, MachineConfig
from balloonlab.emulator.machine import Machine
from balloonlab.stats import UNSET

EPOCH = 1_700_000_000.0
P = "/machine/peripheral/balloon0"
MiB = 1 << 20


def make(version="10.0", guest="linux", seed=0, ram=512 * MiB, **spec):
    clock = Clock("virtual", start_epoch=EPOCH)
    cfg = MachineConfig(ram_size=ram, balloons=[BalloonSpec(id="balloon0", **spec)], qemu_version=version,
                        guest=guest, seed=seed, clock="virtual")
    m = Machine(cfg, clock)
    m.start()
    clock.advance(2)
    m.execute("qom-set", {"path": P, "property": "guest-stats-polling-interval", "value": 1})
    return m, clock


def stats(m) -> dict[str, int]:
    raw = m.execute("qom-get", {"path": P, "property": "guest-stats"})["stats"]
    return {k[5:]: v for k, v in raw.items()}


def act(m, action, **params):
    return m.execute("x-balloonlab-guest", {"action": action, **params})


def near(a, b, tolerance=1 * MiB):
    return abs(a - b) <= tolerance


def test_idle_512m_guest_looks_like_the_observed_ones():
    s72 = stats(make("7.2")[0])
    assert s72["total-memory"] == 492847104
    assert near(s72["free-memory"], 463187968) and near(s72["available-memory"], 462884864)
    assert s72["disk-caches"] == 2269184
    assert 100 <= s72["minor-faults"] < 1000
    assert s72["major-faults"] == s72["swap-in"] == s72["swap-out"] == s72["htlb-pgalloc"] == 0
    s10 = stats(make("10.0")[0])
    assert s10["total-memory"] == 487280640 and near(s10["free-memory"], 459821056)
    assert all(s10[k] == 0 for k in ("oom-kills", "alloc-stalls", "async-scans", "direct-scans",
                                      "async-reclaims", "direct-reclaims"))


def test_tmpfs_write_drops_free_and_grows_disk_caches():
    m, clock = make("7.2")
    before = stats(m)
    act(m, "tmpfs", size="96M")
    clock.advance(1.1)
    after = stats(m)
    assert near(before["free-memory"] - after["free-memory"], 96 * MiB)
    assert after["disk-caches"] - before["disk-caches"] == 96 * MiB
    assert near(before["available-memory"] - after["available-memory"], 96 * MiB)  # shmem is not reclaimable


def test_allocation_ramp_and_free():
    m, clock = make()
    free0 = stats(m)["free-memory"]
    act(m, "allocate", size="200M", duration="10s")
    clock.advance(5)  # the last report is from about 4 s into the ramp
    assert 75 * MiB <= free0 - stats(m)["free-memory"] <= 101 * MiB
    clock.advance(6)
    assert near(free0 - stats(m)["free-memory"], 200 * MiB, 2 * MiB)
    faults = stats(m)["minor-faults"]
    assert faults > 200 * MiB // 4096
    act(m, "free")
    clock.advance(1.1)
    assert near(stats(m)["free-memory"], free0)


def test_page_cache_growth_is_available_and_reclaimed_under_pressure():
    m, clock = make()
    s0 = stats(m)
    act(m, "cache", size="300M", duration="30s")
    clock.advance(31)
    s1 = stats(m)
    assert near(s1["disk-caches"] - s0["disk-caches"], 300 * MiB)
    assert s1["free-memory"] < s0["free-memory"] - 290 * MiB
    assert s1["available-memory"] > s1["free-memory"] + 250 * MiB  # cache counts as available
    act(m, "allocate", size="300M", duration="5s")
    clock.advance(6)
    s2 = stats(m)
    assert s2["disk-caches"] < s1["disk-caches"] - 100 * MiB
    assert s2["async-reclaims"] > 0 and s2["async-scans"] >= s2["async-reclaims"]
    assert s2["swap-out"] == 0


def test_swap_only_under_pressure_and_oom_beyond_swap():
    m, clock = make()
    act(m, "allocate", size="400M", duration="4s")
    clock.advance(5)
    assert stats(m)["swap-out"] == 0
    act(m, "allocate", size="150M", duration="5s")
    clock.advance(6)
    s = stats(m)
    assert s["swap-out"] > 50 * MiB and s["alloc-stalls"] > 0
    clock.advance(20)
    s2 = stats(m)
    assert s2["swap-in"] > 0 and s2["major-faults"] > 0  # a working set that does not fit churns
    act(m, "allocate", size="1G")
    clock.advance(1.1)
    assert stats(m)["oom-kills"] == 1
    assert stats(m)["free-memory"] > 400 * MiB  # the killed workload's memory is back


def test_balloon_shrinks_total_without_deflate_on_oom():
    m, clock = make()
    total0 = stats(m)["total-memory"]
    m.execute("balloon", {"value": 256 * MiB})
    clock.advance(3)
    assert stats(m)["total-memory"] == total0 - 256 * MiB


def test_deflate_on_oom_keeps_total_and_gives_pages_back():
    m, clock = make(deflate_on_oom=True)
    total0 = stats(m)["total-memory"]
    m.execute("balloon", {"value": 256 * MiB})
    clock.advance(3)
    s = stats(m)
    assert s["total-memory"] == total0 and s["free-memory"] < 250 * MiB
    act(m, "allocate", size="600M")  # more than RAM + swap leaves once the balloon is counted
    clock.advance(1.1)
    assert m.execute("query-balloon", {})["actual"] > 256 * MiB  # the balloon deflated instead of an OOM kill
    assert m.execute("qom-get", {"path": P, "property": "deflate-on-oom"}) is True


def test_balloon_cannot_take_memory_the_guest_uses():
    m, clock = make()
    act(m, "allocate", size="350M")
    m.execute("balloon", {"value": 64 * MiB})
    clock.advance(10)
    actual = m.execute("query-balloon", {})["actual"]
    assert actual > 350 * MiB  # it stopped when the guest ran out of free and cache
    assert stats(m)["swap-out"] == 0


def test_stop_and_start_answering():
    m, clock = make()
    act(m, "stop-answering")
    clock.advance(5)
    n = m.device.reports
    clock.advance(30)
    assert m.device.reports == n and m.device.statsq.holder == "guest"
    act(m, "start-answering")
    clock.advance(5)
    assert m.device.reports > n + 3


def test_partial_guest_reports_a_subset():
    s = stats(make(guest="partial")[0])
    assert s["free-memory"] != UNSET and s["total-memory"] != UNSET and s["minor-faults"] != UNSET
    assert s["available-memory"] == UNSET and s["disk-caches"] == UNSET and s["oom-kills"] == UNSET


def test_windows_guest_semantics_and_service_states():
    m, clock = make(guest="windows")
    act(m, "cache", size="100M")
    clock.advance(1.1)
    s = stats(m)
    assert s["free-memory"] == s["available-memory"]  # Windows "available": free + standby
    assert s["disk-caches"] > 100 * MiB and s["free-memory"] > 400 * MiB
    assert s["htlb-pgalloc"] == UNSET and s["oom-kills"] == UNSET
    act(m, "service", state="empty")
    clock.advance(1.1)
    last = m.execute("qom-get", {"path": P, "property": "guest-stats"})
    assert set(last["stats"].values()) == {UNSET} and last["last-update"] > int(EPOCH) + 2
    act(m, "service", state="stopped")
    clock.advance(3)
    n = m.device.reports
    clock.advance(30)
    assert m.device.reports == n


def test_windows_without_service_never_reports():
    clock = Clock("virtual", start_epoch=EPOCH)
    m = Machine(MachineConfig(ram_size=512 * MiB, balloons=[BalloonSpec(id="balloon0")], guest="windows"), clock)
    m.guest.service = "stopped"
    m.start()
    clock.advance(30)
    assert m.execute("qom-get", {"path": P, "property": "guest-stats"})["last-update"] == 0


def test_same_seed_same_numbers_other_seed_other_numbers():
    def run(seed):
        m, clock = make(seed=seed)
        act(m, "allocate", size="100M", duration="20s")
        clock.advance(60)
        return [e["bytes"] for e in m.execute("x-balloonlab-trace", {})["exchanges"]]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_status_action_describes_the_guest():
    m, _ = make()
    st = act(m, "status")
    assert st["guest"] == "linux" and st["kernel"] == "6.12" and st["driver-loaded"] is True
    assert st["memory"]["ram"] == 512 * MiB


@pytest.mark.parametrize("doo", [False, True])
@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["allocate", "free", "cache", "tmpfs", "drop-caches", "balloon"]),
                          st.integers(0, 700), st.integers(0, 20)), max_size=8))
def test_memory_stays_consistent_under_any_workload(doo, steps):
    m, clock = make(deflate_on_oom=doo)
    for action, size_mib, secs in steps:
        if action == "balloon":
            m.execute("balloon", {"value": max(1, size_mib) * MiB})
        elif action == "drop-caches":
            act(m, action)
        elif action == "tmpfs":
            act(m, action, size=f"{min(size_mib, 200)}M")
        else:
            act(m, action, size=f"{size_mib}M", duration=secs)
        clock.advance(secs / 2 + 1.1)
        s = stats(m)
        assert 0 <= s["free-memory"] <= s["total-memory"]
        assert 0 <= s["available-memory"] <= s["total-memory"] <= 512 * MiB
        assert s["disk-caches"] <= s["total-memory"]
        assert s["swap-in"] <= s["swap-out"] + 1  # nothing comes back that never went out
