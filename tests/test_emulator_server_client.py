"""The emulator's QMP server as QEMU's own Python client library (qemu.qmp's QMPClient) sees it.

QMPClient negotiates by itself (offering OOB when the greeting does), sends every message without a newline,
tags each with its own id, and matches replies by id: so these tests pass only if the framing, the id echo and
the negotiation are right.  The client runs on its own loop in the test thread; the emulator on the fixture's.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from qemu.qmp import ExecuteError, QMPClient


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def connected(path: str) -> QMPClient:
    client = QMPClient("balloonlab-tests")
    await client.connect(path)
    return client


def test_qmpclient_negotiates_and_runs_commands(emulator_socket):
    path = emulator_socket(qemu_version="7.2", start_paused=True, ram_size=256 << 20)

    async def session():
        client = await connected(path)
        try:
            assert client.greeting.QMP.version["qemu"]["major"] == 7
            status = await client.execute("query-status")
            summary = await client.execute("query-memory-size-summary")
            kind = await client.execute("qom-get", {"path": "/machine/peripheral/balloon0", "property": "type"})
            interval = await client.execute("qom-get", {"path": "balloon0", "property": "guest-stats-polling-interval"})
            return status, summary, kind, interval
        finally:
            await client.disconnect()

    status, summary, kind, interval = run(session())
    assert status == {"status": "prelaunch", "singlestep": False, "running": False}
    assert summary == {"base-memory": 256 << 20, "plugged-memory": 0}
    assert kind == "virtio-balloon-pci" and interval == 0


def test_qmpclient_sees_qemus_errors(emulator_socket):
    path = emulator_socket(qemu_version="7.2")

    async def session():
        client = await connected(path)
        errors = []
        try:
            for command, args in (("no-such-command", {}), ("qom-set", {"path": "balloon0", "property":
                                  "guest-stats-polling-interval", "value": -1}), ("query-status", {"bogus": 1})):
                with pytest.raises(ExecuteError) as info:
                    await client.execute(command, args)
                errors.append((info.value.error_class, info.value.error.error.desc))
            # the connection is still good after errors
            errors.append(await client.execute("query-balloon"))
        finally:
            await client.disconnect()
        return errors

    assert run(session()) == [
        ("CommandNotFound", "The command no-such-command has not been found"),
        ("GenericError", "timer value must be greater than zero"),
        ("GenericError", "Parameter 'bogus' is unexpected"),
        {"actual": 512 << 20},
    ]


def test_qmpclients_in_parallel_each_get_events(emulator_socket):
    path = emulator_socket(start_paused=True)

    async def session():
        a, b = await connected(path), await connected(path)
        try:
            with a.listener() as la, b.listener() as lb:
                await a.execute("cont")
                got_a = await asyncio.wait_for(la.get(), 10)
                got_b = await asyncio.wait_for(lb.get(), 10)
                results = await asyncio.gather(*(c.execute("query-status") for c in (a, b, a, b)))
            return got_a, got_b, results
        finally:
            await a.disconnect()
            await b.disconnect()

    got_a, got_b, results = run(session())
    assert got_a["event"] == got_b["event"] == "RESUME"
    assert got_a["timestamp"] == got_b["timestamp"]  # one event, fanned out
    assert all(r["status"] == "running" for r in results)


def test_qmpclient_quit_stops_the_emulator(emulator_factory, emulator_loop):
    emulator = emulator_factory()

    async def session():
        client = await connected(emulator.socket_path)
        with client.listener("SHUTDOWN") as listener:
            assert await client.execute("quit") == {}
            event = await asyncio.wait_for(listener.get(), 10)
        with contextlib.suppress(EOFError):  # the server hung up after quit, as QEMU does
            await client.disconnect()
        return event

    assert run(session())["data"] == {"guest": False, "reason": "host-qmp-quit"}
    emulator_loop.run(emulator.wait_closed())
