"""Replay as a workload: a VM of an emulated host whose guest follows a real QEMU guest's recorded appetite."""

from __future__ import annotations

import gzip

import pytest

import balloonlab
from balloonlab.client.replay import load, recorded_workload
from balloonlab.emulator.workloads import RecordedCurve
from tests.helpers import clean_loop  # noqa: F401  (autouse)

MiB = 1 << 20
FILL = "tmpfs-fill-7.2"  # 200 MiB of tmpfs written, then removed (free page reporting off)
TOLERANCE = 4 * MiB  # the model's idle guest against the recorded one, and a report's jitter


def flat_times(curve: RecordedCurve, step: float = 2.0) -> list[float]:
    """Times (multiples of ``step``) where the recorded curve has not moved for 4 s: a report taken up to one
    polling interval before them still shows that value."""
    times, t = [], step
    while t < curve.period:
        if len({curve.held_at(t - d) for d in (0, 1, 2, 3, 4)}) == 1:
            times.append(t)
        t += step
    return times


def along(host: balloonlab.Host, name: str, times: list[float]) -> list[tuple[int, int]]:
    """The VM's used memory (total - available, as its stats report it) and its QEMU's RSS on the host at each
    of ``times``, seconds from now (a fresh host: from its start)."""
    lab = host[name]
    lab.polling_interval = 1
    start = host.wall_time()
    seen = []
    for t in times:
        host.advance(t - (host.wall_time() - start))
        used = lab.stats().used_memory()
        assert used is not None
        seen.append((used, lab.host_rss))
    return seen


def used_along(host: balloonlab.Host, name: str, times: list[float]) -> list[int]:
    return [used for used, _ in along(host, name, times)]


def replaying_host(vm_memory: str = "512M", recording: str = FILL, seed: int = 0,
                   free_page_reporting: bool = False) -> balloonlab.Host:
    # QEMU 7.2's profile runs the 6.1 guest kernel the shipped 7.2 recordings were made with
    return balloonlab.emulate_host(memory="3G", vms=1, vm_memory=vm_memory, qemu_version="7.2", seed=seed,
                                   free_page_reporting=free_page_reporting,
                                   workloads={"vm0": f"recording:{recording}"})


def test_a_vm_running_a_shipped_recording_follows_its_memory_curve():
    curve = recorded_workload(FILL)
    recorded = dict(load(FILL).appetite())
    idle = next(iter(recorded.values()))
    times = flat_times(curve)
    with replaying_host() as host:
        used = used_along(host, "vm0", times)
    expected = [idle + curve.held_at(t) for t in times]
    assert len(times) >= 20
    assert max(expected) - min(expected) > 150 * MiB  # the fill and the free are both among the compared times
    for t, got, want in zip(times, used, expected):
        assert abs(got - want) <= TOLERANCE, f"at {t} s the VM uses {got >> 20} MiB, the recording {want >> 20}"


def test_a_bigger_vm_holds_the_recorded_fill_scaled_by_its_ram():
    curve = recorded_workload(FILL)
    plateau = max(flat_times(curve), key=curve.held_at)
    with replaying_host(vm_memory="1G") as host:
        idle, full = used_along(host, "vm0", [2.0, plateau])
    assert curve.held_at(plateau) > 190 * MiB
    assert full - idle == pytest.approx(2 * curve.held_at(plateau), rel=0.03)


def test_the_recording_starts_again_when_it_ends():
    curve = recorded_workload(FILL)
    plateau = max(flat_times(curve), key=curve.held_at)
    with replaying_host() as host:
        first, idle_after, again = used_along(host, "vm0", [plateau, curve.period - 2, curve.period + plateau])
    assert first - idle_after > 190 * MiB
    assert abs(again - first) <= TOLERANCE


@pytest.mark.parametrize("free_page_reporting", [False, True])
def test_the_recorded_fill_costs_the_host_and_comes_back_only_with_free_page_reporting(free_page_reporting):
    curve = recorded_workload(FILL)
    plateau = max(flat_times(curve), key=curve.held_at)
    with replaying_host(free_page_reporting=free_page_reporting) as host:
        (_, before), (_, filled), (_, freed) = along(host, "vm0", [2.0, plateau, curve.period - 2])
    assert filled - before == pytest.approx(curve.held_at(plateau), rel=0.15)
    if free_page_reporting:  # A3: the freed pages go back to the host
        assert freed - before == pytest.approx(0, abs=0.1 * before)
    else:  # A3: the host keeps the pages the guest freed
        assert abs(freed - filled) <= TOLERANCE


def test_a_deflate_on_oom_recording_gives_its_appetite_without_the_recorded_balloon():
    recorded = dict(load("deflate-on-oom-7.2").memory_curve())
    curve = recorded_workload("deflate-on-oom-7.2")
    t = 30.0  # the recorded balloon holds 352 MiB, which the stats count as used (deflate-on-oom), no fill yet
    assert max(u for vm, u in recorded.items() if 24 <= vm <= 34) > 350 * MiB
    assert curve.held_at(t) == 0
    with replaying_host(recording="deflate-on-oom-7.2") as host:
        (used,) = used_along(host, "vm0", [t])
    assert used < 40 * MiB


def test_the_same_seed_replays_the_same_day():
    curve = recorded_workload(FILL)
    times = [t * 10.0 for t in range(1, int(2 * curve.period / 10))]

    def run(seed: int) -> tuple[list[int], int]:
        with replaying_host(seed=seed) as host:
            return used_along(host, "vm0", times), host.usage().rss["vm0"]

    assert run(3) == run(3)


def test_emulate_and_add_vm_take_a_recording_as_workload_too():
    with balloonlab.emulate(memory="512M", clock="virtual", qemu_version="7.2",
                            workload=f"recording:{FILL}") as lab:
        lab.polling_interval = 1
        lab.advance("40s")
        assert lab.stats().used_memory() > 200 * MiB
    with balloonlab.emulate_host(memory="3G", vms=0) as host:
        lab = host.add_vm("512M", workload="recording:inflate-under-load-7.2")
        lab.polling_interval = 1
        host.advance("40s")
        assert lab.stats().used_memory() > 100 * MiB


def test_an_unknown_recording_names_the_shipped_ones_and_starts_nothing():
    with pytest.raises(balloonlab.RecordingError, match=r"shipped: .*tmpfs-fill-7\.2"):
        balloonlab.emulate_host(vms=2, workloads={"vm1": "recording:tmpfs-fil"})
    with balloonlab.emulate_host(memory="3G", vms=1) as host:
        with pytest.raises(balloonlab.RecordingError, match="nor a shipped recording"):
            host.add_vm("512M", workload="recording:tmpfs-fil")
        assert host.names == ["vm0"]
        host.advance("10s")  # the host goes on


@pytest.mark.parametrize("spec, message", [
    ("recording:", "needs the name of a shipped recording"),
    ("recordings:tmpfs-fill-7.2", "or 'recording:NAME_OR_PATH' for a recording"),
])
def test_a_misspelt_recording_workload_says_how_to_write_it(spec, message):
    with pytest.raises(balloonlab.EmulatorOptionError, match=message):
        balloonlab.emulate_host(vms=1, workloads=spec)


def test_a_corrupt_recording_file_is_named_with_its_line(tmp_path):
    good = load(FILL).path
    with gzip.open(good, "rt") as f:
        lines = f.read().splitlines(keepends=True)
    bad = tmp_path / "bad.blab"
    bad.write_text(lines[0] + lines[1] + "{not json\n" + "".join(lines[2:]))
    with pytest.raises(balloonlab.RecordingError, match=r"bad\.blab: line 3"):
        balloonlab.emulate_host(vms=1, workloads=f"recording:{bad}")


def test_a_recording_with_no_usable_report_cannot_drive_a_workload(tmp_path):
    with gzip.open(load(FILL).path, "rt") as f:
        header = f.readline()
    empty = tmp_path / "header-only.blab"
    empty.write_text(header)
    with pytest.raises(balloonlab.RecordingError, match=r"header-only\.blab: no report"):
        balloonlab.emulate_host(vms=1, workloads={"vm0": f"recording:{empty}"})
