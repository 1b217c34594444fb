"""Round trips of ``qom-get guest-stats``: the emulator against real QEMU, and ``lab.stats()`` against raw qemu.qmp.

Both servers run as separate processes, idle and paused, with the same command line (``-m 512 -nodefaults
-device virtio-balloon-pci,id=balloon0 -S``): real ``qemu-system-x86_64`` (TCG, no kernel: ``LiveVM(guest=False,
paused=True)``, so no vCPU thread competes for the two cores) and ``balloonlab emulate --guest nodriver
--qemu-version 7.2``.  Both answer ``guest-stats`` with every stat unset, the same reply size.  Real QEMU serves
one client per QMP socket, so it gets one ``-qmp`` socket per client used here (all served by its one main loop).

Figures (ratios of medians of interleaved batches):
* ``rtt_emulator_vs_qemu_raw``: raw blocking socket client, emulator / QEMU (goal <= 0.5);
* ``rtt_emulator_vs_qemu_qmpclient``: the same through ``qemu.qmp.QMPClient.execute`` (for information);
* ``lab_stats_vs_qmpclient_{qemu,emulator}``: ``lab.stats()`` (sync facade: a hop to balloonlab's loop thread,
  the QMPClient call, GuestStats) / ``await QMPClient.execute("qom-get", ...)`` in the caller's own asyncio loop,
  on the same server (goal <= 1.15).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Iterator

from _common import GUEST_STATS_QOM, RawQMP, Result, batch_median, check, have_qemu, interleaved, median, wait_for

DEVICE = "/machine/peripheral/balloon0"
COMMON_ARGS = ["-m", "512", "-nodefaults", "-display", "none", "-device", "virtio-balloon-pci,id=balloon0", "-S"]
QOM_ARGS = {"path": DEVICE, "property": GUEST_STATS_QOM}


@contextlib.contextmanager
def emulator_process(version: str = "7.2") -> Iterator[str]:
    """``balloonlab emulate`` in its own process; yields its socket path; stopped (SIGTERM, then kill) after."""
    tmp = tempfile.mkdtemp(prefix="balloonlab-bench-")
    path = os.path.join(tmp, "qmp.sock")
    proc = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", "-qmp", f"unix:{path},server=on,wait=off",
                             *COMMON_ARGS, "--guest", "nodriver", "--qemu-version", version],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(path) or proc.poll() is not None, 20, "the emulator's socket")
        if proc.poll() is not None:
            raise RuntimeError(f"balloonlab emulate exited: {proc.stderr.read().decode()}")
        yield path
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def bare_process() -> Iterator[str]:
    """bare_server.py (Python's floor for a QMP round trip) in its own process; yields its socket path."""
    tmp = tempfile.mkdtemp(prefix="balloonlab-bench-")
    path = os.path.join(tmp, "bare.sock")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_server.py")
    proc = subprocess.Popen([sys.executable, script, path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(path) or proc.poll() is not None, 20, "the bare server's socket")
        if proc.poll() is not None:
            raise RuntimeError(f"bare_server.py exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        yield path
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@contextlib.contextmanager
def qemu_process(sockets: int) -> Iterator[tuple[Any, list[str]]]:
    """Real QEMU, paused, no guest, with ``sockets`` extra QMP sockets; yields (LiveVM, [socket paths])."""
    from balloonlab.live.launcher import LiveVM

    tmp = tempfile.mkdtemp(prefix="balloonlab-bench-")
    paths = [os.path.join(tmp, f"qmp{i}.sock") for i in range(sockets)]
    extra = [a for p in paths for a in ("-qmp", f"unix:{p},server=on,wait=off")]
    vm = LiveVM.start(memory="512M", balloon_id="balloon0", paused=True, guest=False, extra_args=extra)
    try:
        yield vm, paths
    finally:
        vm.stop()
        shutil.rmtree(tmp, ignore_errors=True)


class AsyncQMP:
    """``qemu.qmp.QMPClient`` driven from the calling thread's own asyncio loop (the baseline a user writes)."""

    def __init__(self, path: str) -> None:
        from qemu.qmp import QMPClient

        self.loop = asyncio.new_event_loop()
        self.client = QMPClient("bench")
        self.loop.run_until_complete(self.client.connect(path))

    def batch(self, size: int) -> float:
        async def run() -> float:
            times = []
            for _ in range(size):
                t = self.loop.time()
                await self.client.execute("qom-get", QOM_ARGS)
                times.append(self.loop.time() - t)
            return median(times)

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.disconnect())
        self.loop.close()


def _lab_batch(lab: Any, size: int) -> float:
    return batch_median(lab.stats, size)


def _raw_batch(raw: RawQMP, size: int) -> float:
    return batch_median(lambda: raw.execute("qom-get", QOM_ARGS), size)


def run(quick: bool = False) -> list[Result]:
    import balloonlab

    rounds, size = (6, 30) if quick else (40, 50)
    keys = ("rtt_emulator_vs_qemu_raw", "rtt_bare_vs_qemu_raw", "rtt_emulator_vs_bare_raw",
            "rtt_emulator_vs_qemu_qmpclient", "lab_stats_vs_qmpclient_qemu", "lab_stats_vs_qmpclient_emulator")
    if not have_qemu():
        return [Result(k, None, "ratio", note="qemu-system-x86_64 not installed") for k in keys]
    with emulator_process() as emu_path, qemu_process(3) as (vm, qpaths), bare_process() as bare_path:
        raw = {"qemu": RawQMP(qpaths[0]), "emulator": RawQMP(emu_path), "bare": RawQMP(bare_path)}
        aq = {"qemu": AsyncQMP(qpaths[1]), "emulator": AsyncQMP(emu_path)}
        labs = {"qemu": balloonlab.connect(qpaths[2], device_path=DEVICE),
                "emulator": balloonlab.connect(emu_path, device_path=DEVICE)}
        try:
            for side in ("qemu", "emulator"):  # warm up every path once
                _raw_batch(raw[side], 20), aq[side].batch(20), _lab_batch(labs[side], 20)
            _raw_batch(raw["bare"], 20)
            from balloonlab.client import loop as _loop

            async def nothing() -> None:
                return None

            # The facade's floor: one round trip to balloonlab's loop thread and back, doing nothing.
            cands = {"handoff": lambda: batch_median(lambda: _loop.run(nothing(), 5), size),
                     "raw/bare": lambda: _raw_batch(raw["bare"], size)}
            for side in ("qemu", "emulator"):
                cands[f"raw/{side}"] = (lambda s=side: _raw_batch(raw[s], size))
                cands[f"qmpclient/{side}"] = (lambda s=side: aq[s].batch(size))
                cands[f"lab/{side}"] = (lambda s=side: _lab_batch(labs[s], size))
            got = {k: median(v) for k, v in interleaved(cands, rounds).items()}
        finally:
            for r in raw.values():
                r.close()
            for a in aq.values():
                a.close()
            for lab in labs.values():
                lab.close()
    us = {k: round(v * 1e6, 1) for k, v in got.items()}
    qemu_version = vm.qemu_version
    setup = f"QEMU {qemu_version} TCG paused, no guest (-S, guest=False) vs balloonlab emulate -S --guest nodriver"
    r1 = got["raw/emulator"] / got["raw/qemu"]
    floor, over_floor = got["raw/bare"] / got["raw/qemu"], got["raw/emulator"] / got["raw/bare"]
    r2 = got["qmpclient/emulator"] / got["qmpclient/qemu"]
    r3 = got["lab/qemu"] / got["qmpclient/qemu"]
    r4 = got["lab/emulator"] / got["qmpclient/emulator"]
    return [
        Result(keys[0], round(r1, 3), "ratio", "<= 0.4", check(r1, "<=", 0.4),
               {"emulator_us": us["raw/emulator"], "qemu_us": us["raw/qemu"], "bare_us": us["raw/bare"]},
               setup + "; raw socket"),
        Result(keys[1], round(floor, 3), "ratio", None, None, {"bare_us": us["raw/bare"], "qemu_us": us["raw/qemu"]},
               "Python's floor: bare_server.py (asyncio Protocol, json.loads, 16-stat json.dumps) / QEMU; raw socket"),
        Result(keys[2], round(over_floor, 3), "ratio", None, None,
               {"emulator_us": us["raw/emulator"], "bare_us": us["raw/bare"]},
               "the emulator over Python's floor; raw socket"),
        Result(keys[3], round(r2, 3), "ratio", None, None,
               {"emulator_us": us["qmpclient/emulator"], "qemu_us": us["qmpclient/qemu"]},
               setup + "; qemu.qmp QMPClient.execute"),
        Result(keys[4], round(r3, 3), "ratio", "<= 1.15", check(r3, "<=", 1.15),
               {"lab_stats_us": us["lab/qemu"], "qmpclient_us": us["qmpclient/qemu"],
                "thread_handoff_us": us["handoff"]}, "real QEMU " + qemu_version),
        Result(keys[5], round(r4, 3), "ratio", "<= 1.15", check(r4, "<=", 1.15),
               {"lab_stats_us": us["lab/emulator"], "qmpclient_us": us["qmpclient/emulator"],
                "thread_handoff_us": us["handoff"]},
               "balloonlab emulate (separate process)"),
    ]
