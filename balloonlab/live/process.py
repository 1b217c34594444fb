"""Start child processes that die with us, and stop them for sure.

``PR_SET_PDEATHSIG(SIGKILL)`` makes the kernel kill the child when its parent goes, even when the parent is
SIGKILLed and no Python cleanup runs.  The signal follows the *thread* that forked, not the process (see
prctl(2)), so :func:`spawn` forks every child from one long-lived daemon thread: a child forked by an executor
worker or a short-lived thread would otherwise be killed when that thread ends.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
from typing import Any
import functools
import os
import queue
import signal
import subprocess
import threading

_PR_SET_PDEATHSIG = 1
_prctl: Any
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal; callers' finalizers still stop children
    _prctl = None


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the forked child before exec: ask for SIGKILL when the parent (thread) dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died between fork and prctl: nobody would kill us later
        os.kill(os.getpid(), signal.SIGKILL)


class _Spawner:
    """The one daemon thread that forks every child (it lives as long as the process)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="balloonlab-spawner", daemon=True)
                self._thread.start()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, argv, kwargs))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, argv, kwargs = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                proc = subprocess.Popen(argv, preexec_fn=functools.partial(_die_with_parent, os.getpid()), **kwargs)
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)
            else:
                future.set_result(proc)


_spawner = _Spawner()


def spawn(argv: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen_kwargs)`` for a child that is SIGKILLed when this process dies."""
    return _spawner.popen(list(argv), **popen_kwargs)


def terminate(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; always reaps.  Returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode
