"""The synchronous facade from the places a notebook calls it: inside a running event loop (the kernel's), from
many threads at once (widget comm handlers), and - wrongly - from a subscribe callback.  Real QEMU, no guest."""

from __future__ import annotations

import asyncio
import threading

import pytest

import balloonlab
from tests.helpers import clean_loop, wait_until  # noqa: F401  (clean_loop: autouse fixture)

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def lab(qemu_binary):
    from balloonlab.live.launcher import LiveVM

    vm = LiveVM.start(guest=False)
    try:
        with balloonlab.connect(vm.qmp_socket) as lab:
            yield lab
    finally:
        vm.stop()


def test_sync_calls_inside_a_running_event_loop(lab):
    async def cell():  # what a notebook cell is: code running while the kernel's loop runs
        ticks = []

        async def ticker():
            for _ in range(3):
                ticks.append(1)
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        interval = lab.polling_interval
        stats = lab.stats()
        await task
        return interval, stats, ticks

    interval, stats, ticks = asyncio.run(cell())
    assert interval == 0 and len(stats) == 10 and len(ticks) == 3


def test_many_threads_at_once(lab):
    errors, results = [], []

    def worker(n: int) -> None:
        try:
            for _ in range(10):
                if n % 2:
                    results.append(len(lab.stats()))
                else:
                    results.append(lab.actual)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 80
    assert set(results) == {10, lab.ram_size}


def test_a_callback_calling_the_lab_gets_an_error_not_a_deadlock(lab):
    seen = []

    def callback(update):
        try:
            lab.stats()
        except RuntimeError as exc:
            seen.append(str(exc))

    unsubscribe = lab.subscribe(callback)
    try:
        lab.polling_interval = 3
        assert wait_until(lambda: bool(seen), 10)
        assert "callback" in seen[0]
        assert lab.polling_interval == 3  # the loop is still serving
    finally:
        unsubscribe()
        lab.polling_interval = 0


def test_a_raising_callback_does_not_break_delivery(lab):
    got = []

    def bad(update):
        raise ValueError("boom")

    u1 = lab.subscribe(bad)
    u2 = lab.subscribe(got.append)
    try:
        lab.polling_interval = 4
        assert wait_until(lambda: any(u.kind == "interval" and u.interval == 4 for u in got), 10)
    finally:
        u1()
        u2()
        lab.polling_interval = 0
