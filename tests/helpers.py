"""Small helpers shared by the tests: polling with a deadline, reading /proc, splitting printed JSON.

Why one module: every test that waits for something asynchronous (a report, a process exit, a server) needs the
same loop -- call, check, give up at a deadline, never sleep a fixed time -- and every test that stops processes
needs the same reading of ``/proc/PID/stat``.  Keeping one copy keeps their semantics (and failure messages) one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from balloonlab.client import loop as _loop

T = TypeVar("T")

#: Overrides where tests leave files for a person (screenshots, transcripts of failed conversations).
ARTIFACTS_ENV = "BALLOONLAB_TEST_ARTIFACTS"


def artifacts_dir(*parts: str) -> Path:
    """Where tests leave files for a person to look at: ``$BALLOONLAB_TEST_ARTIFACTS`` (CI points it at what it
    uploads), else ``balloonlab-test-artifacts`` in the temporary directory -- never inside the checkout, so a
    test run leaves the working tree clean.  Created on first use."""
    base = os.environ.get(ARTIFACTS_ENV) or os.path.join(tempfile.gettempdir(), "balloonlab-test-artifacts")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def clean_loop() -> Iterator[None]:
    """Fail the test when an exception escaped into balloonlab's background loop meanwhile (nothing else would
    show it).  Autouse where a test module imports it."""
    before = len(_loop.loop_errors())
    yield
    assert _loop.loop_errors()[before:] == [], "an exception escaped into balloonlab's background loop"


def poll(probe: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns something truthy or ``timeout`` s have passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s passed; whether it became true (for ``assert``)."""
    return bool(poll(predicate, timeout, interval))


def wait_for(probe: Callable[[], T], what: str, timeout: float = 15.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it is truthy and return that value; after ``timeout`` s fail naming ``what``."""
    value = poll(probe, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
    return value


# --------------------------------------------------------------------------------------------------------------
# /proc


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the tests use (``comm`` may hold spaces and parentheses)."""

    pid: int
    comm: str
    state: str
    ppid: int
    starttime: str  # field 22: with the PID it names one process, so a reused PID is never mistaken for it


def proc_stat(pid: int) -> ProcStat | None:
    """``/proc/PID/stat`` parsed, or None when there is no such process (any more)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm, rest = text.split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return ProcStat(pid, comm, fields[0], int(fields[1]), fields[19])


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie waiting for a reaper that is not us)."""
    stat = proc_stat(pid)
    return stat is None or stat.state in ("Z", "X")


def processes() -> Iterator[ProcStat]:
    """Every process visible in /proc (ones that exit while we read are skipped)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None:
                yield stat


# --------------------------------------------------------------------------------------------------------------
# output


def json_values(text: str) -> list[Any]:
    """The JSON values printed one after the other (compact lines or indented blocks)."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        value, pos = decoder.raw_decode(text, pos)
        values.append(value)
    return values


@contextlib.contextmanager
def balloonlab_process(*args: str) -> Iterator[subprocess.Popen]:
    """``python -m balloonlab ARGS`` with stdout and stderr piped (text); killed if still running, and reaped, on
    the way out, also when the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "balloonlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def emulate_command(*options: str) -> Iterator[str]:
    """``balloonlab emulate`` in a subprocess (256 MiB, balloon at /machine/peripheral/balloon0, plus ``options``),
    as a person starts it; yields its QMP socket once it listens, and stops it (and removes its folder) after."""
    workdir = tempfile.mkdtemp(prefix="balloonlab-cmd-")
    path = os.path.join(workdir, "qmp.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "balloonlab", "emulate", *options, "-qmp", f"unix:{path},server=on,wait=off",
         "-m", "256", "-device", "virtio-balloon-pci,id=balloon0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == path  # printed once it listens
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
