"""The emulator's clocks: virtual advance, VM clock pausing, timer ordering, real-time dispatch on a loop."""

from __future__ import annotations

import asyncio

import pytest

from balloonlab.emulator.clock import HOST, NS, VM, Clock
from balloonlab.errors import VirtualClockRequiredError


def test_advance_runs_due_timers_in_time_order():
    clock = Clock("virtual")
    clock.vm_start()
    fired = []
    for name, at in (("c", 3), ("a", 1), ("b", 2)):
        clock.new_timer(VM, lambda n=name: fired.append((n, clock.vm_ns()))).mod(at * NS)
    clock.advance(2.5)
    assert fired == [("a", 1 * NS), ("b", 2 * NS)]
    clock.advance(1)
    assert [n for n, _ in fired] == ["a", "b", "c"]
    assert clock.vm_ns() == clock.host_ns() == int(3.5 * NS)


def test_timer_rearmed_from_its_callback_runs_again_within_one_advance():
    clock = Clock("virtual")
    clock.vm_start()
    count = []
    timer = clock.new_timer(VM, lambda: (count.append(1), timer.mod_in(NS)))
    timer.mod(0)
    clock.advance(10)
    assert len(count) == 11  # at 0, 1, ..., 10


def test_vm_clock_stands_still_while_paused_and_vm_timers_wait():
    clock = Clock("virtual")
    clock.vm_start()
    fired = []
    clock.new_timer(VM, lambda: fired.append("vm")).mod_in(2 * NS)
    clock.new_timer(HOST, lambda: fired.append("host")).mod_in(2 * NS)
    clock.advance(1)
    clock.vm_stop()
    clock.advance(5)
    assert fired == ["host"]
    assert clock.vm_ns() == NS and clock.host_ns() == 6 * NS
    clock.vm_start()
    clock.advance(0.5)
    assert fired == ["host"]
    clock.advance(0.5)
    assert fired == ["host", "vm"]


def test_deleted_and_remodded_timers():
    clock = Clock("virtual")
    clock.vm_start()
    fired = []
    t = clock.new_timer(VM, lambda: fired.append(clock.vm_ns()))
    t.mod_in(NS)
    t.delete()
    assert not t.pending
    clock.advance(2)
    assert fired == []
    t.mod_in(NS)
    t.mod_in(3 * NS)  # re-mod replaces the earlier expiry
    clock.advance(10)
    assert fired == [5 * NS]


def test_wall_time_of_virtual_clock_follows_host_time():
    clock = Clock("virtual", start_epoch=1_700_000_000.0)
    clock.advance(90)
    assert clock.wall_time() == 1_700_000_090.0


def test_advance_on_real_clock_raises():
    with pytest.raises(VirtualClockRequiredError):
        Clock("real").advance(1)
    with pytest.raises(ValueError):
        Clock("virtual").advance(-1)
    with pytest.raises(ValueError):
        Clock("sundial")


def test_real_clock_runs_timers_on_the_loop_and_close_cancels():
    async def scenario():
        loop = asyncio.get_running_loop()
        clock = Clock("real", loop)
        clock.vm_start()
        done = loop.create_future()
        clock.new_timer(VM, lambda: done.set_result(clock.vm_ns())).mod_in(20_000_000)
        never = []
        clock.new_timer(HOST, lambda: never.append(1)).mod_in(60 * NS)
        vm_ns = await asyncio.wait_for(done, 5)
        assert vm_ns >= 20_000_000
        clock.close()
        assert clock.pending_timers() == 0 and never == []

    asyncio.run(scenario())


def test_real_clock_paused_vm_timer_does_not_fire():
    async def scenario():
        loop = asyncio.get_running_loop()
        clock = Clock("real", loop)
        fired = []
        clock.new_timer(VM, lambda: fired.append(1)).mod(0)  # VM never started
        host_done = loop.create_future()
        clock.new_timer(HOST, lambda: host_done.set_result(True)).mod_in(30_000_000)
        await asyncio.wait_for(host_done, 5)
        assert fired == []
        clock.vm_start()
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0.01)
        assert fired == [1]
        clock.close()

    asyncio.run(scenario())


def test_rearming_far_future_timers_does_not_grow_the_heap_without_bound():
    """Deletion is lazy; a client flipping the interval between 1 and 4294967295 on a paused VM re-arms a timer
    that never reaches the top of the heap.  The heap is compacted, so its size stays bounded."""
    clock = Clock("virtual")
    timer = clock.new_timer(VM, lambda: None)
    for i in range(20_000):
        timer.mod_in((1 if i % 2 else 4294967295) * NS)
    assert clock.pending_timers() == 1
    assert sum(map(len, clock._heaps.values())) < 200


def test_a_failing_timer_does_not_stop_virtual_time():
    clock = Clock("virtual")
    fired = []
    clock.new_timer(HOST, lambda: 1 / 0).mod(1 * NS)
    clock.new_timer(HOST, lambda: fired.append(clock.host_ns())).mod(2 * NS)
    clock.advance(3)
    assert fired == [2 * NS] and clock.host_ns() == 3 * NS
