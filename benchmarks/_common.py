"""What every benchmark module shares: interleaved timing, medians, the machine description, a raw QMP socket.

Why interleave: the machine is shared and noisy (2 cores, several other jobs), so a candidate measured at 04:10 and
its baseline measured at 04:11 may see different neighbours.  Every comparison here alternates candidate and
baseline in small batches (in a shuffled order per round), and reports the median of many rounds, so slow
phases of the machine hit both sides alike.  Figures are ratios of those medians.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

GUEST_STATS_QOM = "guest-stats"
INTERVAL_QOM = "guest-stats-polling-interval"


@dataclass
class Result:
    """One measured figure: ``value`` in ``unit``; ``goal`` as text (``"<= 0.5"``) and whether it is met."""

    key: str
    value: float | None
    unit: str
    goal: str | None = None
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "goal": self.goal, "met": self.met, "note": self.note,
                **({"detail": self.detail} if self.detail else {})}


def check(value: float | None, op: str, limit: float) -> bool | None:
    """Whether ``value`` meets ``op limit`` (None when the value could not be measured)."""
    if value is None:
        return None
    return {"<": value < limit, "<=": value <= limit}[op]


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(candidates: dict[str, Callable[[], float]], rounds: int, seed: int = 1) -> dict[str, list[float]]:
    """Run every ``candidates[name]()`` once per round, in a shuffled order each round; collect what each
    returns (a per-operation time, typically the median of a small batch)."""
    rng = random.Random(seed)
    names = list(candidates)
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            out[name].append(candidates[name]())
    return out


def batch_median(op: Callable[[], Any], size: int) -> float:
    """Median wall time (seconds) of ``size`` calls of ``op``."""
    times = []
    for _ in range(size):
        t = time.perf_counter()
        op()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def calibration(rounds: int = 5) -> float:
    """Milliseconds of a fixed pure-Python workload (JSON round trips of a guest-stats reply): how fast this
    machine was during the run, so figures from different machines can be compared."""
    reply = {"return": {"stats": {f"stat-{i}": 10**9 + i for i in range(16)}, "last-update": 1795667711}}
    samples = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(2000):
            json.loads(json.dumps(reply))
        samples.append((time.process_time() - t) * 1e3)
    return median(samples)


def machine() -> dict[str, Any]:
    """nproc, CPU model, QEMU version, Python, load average: what the figures were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    qemu = None
    if shutil.which("qemu-system-x86_64"):
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
        qemu = out.splitlines()[0] if out else None
    return {"nproc": os.cpu_count(), "cpu": cpu, "qemu": qemu, "python": platform.python_version(),
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}


class RawQMP:
    """A blocking QMP client on a raw unix socket: the thinnest possible client, for round-trip baselines."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._buf = b""
        self.greeting = self._line()
        self.execute("qmp_capabilities")

    def _line(self) -> dict:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1:]
                msg = json.loads(line)
                if "event" in msg and "timestamp" in msg:
                    continue
                return msg
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP server closed the connection")
            self._buf += chunk

    def execute(self, command: str, arguments: dict | None = None) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode())
        reply = self._line()
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error']}")
        return reply["return"]

    def close(self) -> None:
        self._sock.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)


def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None
