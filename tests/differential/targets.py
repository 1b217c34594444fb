"""The two sides of a differential test, started from one description of the VM.

Real QEMU is started by the live backend (:class:`balloonlab.live.launcher.LiveVM`): this machine's
qemu-system-x86_64 (7.2) or Debian 13's QEMU 10.0 from its cached tree.  The emulator is started by the
``balloonlab emulate`` command with the same qemu-system options, answering as the real one's version (and, with
a guest, running the live image's kernel): the emulator is always the command a user runs, never a stand-in.
:class:`Pair` runs one conversation against both at once (two threads: the guest waits overlap) and compares.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import artifacts_dir

from .compare import Verdict, compare
from .conversation import Conversation, Observation, run_conversation

MIB = 1 << 20


@dataclass(frozen=True)
class VMSpec:
    """What both sides run: RAM, whether there is a balloon device, -S, and a guest with the driver or none."""

    memory_mib: int = 512
    device: bool = True
    device_id: str = "balloon0"  #: "" = no id (the device lands in /machine/peripheral-anon)
    paused: bool = False
    guest: bool = False  #: True: Linux 6.1 guest with virtio_balloon; False: no guest (emulator: nodriver)
    #: which real QEMU: "host" (this machine's qemu-system-x86_64, 7.2 on Debian 12) or "debian13" (QEMU 10.0
    #: from the cached Debian 13 tree, balloonlab/live/debian_qemu.py)
    qemu: str = "host"
    #: balloonlab-only options for the emulator side (e.g. ``("--single-client",)``); real QEMU gets none
    emulator_args: tuple[str, ...] = ()

    @property
    def ram_size(self) -> int:
        return self.memory_mib * MIB

    def common_args(self) -> list[str]:
        """The emulator's qemu-system options.  LiveVM gives real QEMU the same ones (plus its console, guest
        command channel and private monitor, which nothing in a conversation can see)."""
        args = ["-m", str(self.memory_mib), "-nodefaults", "-display", "none"]
        if self.device:
            args += ["-device", "virtio-balloon-pci" + (f",id={self.device_id}" if self.device_id else "")]
        if self.paused:
            args.append("-S")
        return args


def guest_kernel() -> str:
    """``major.minor`` of the live guest image's kernel (6.1): the emulated Linux must be the same kernel, also
    when it answers as QEMU 10.0 (whose own default guest is 6.12)."""
    from balloonlab.live.guest_image import ensure_image

    return ".".join(ensure_image().kernel_version.split(".")[:2])


def qemu_version() -> str:
    """``major.minor`` of this machine's qemu-system-x86_64 (the emulator profile to compare with)."""
    out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True).stdout
    words = out.split()
    full = words[words.index("version") + 1]
    return ".".join(full.split(".")[:2])


class RealQEMU:
    """qemu-system-x86_64 through LiveVM."""

    kind = "qemu"

    def __init__(self, spec: VMSpec) -> None:
        from balloonlab.live.launcher import LiveVM

        self.spec = spec
        self.ram_size = spec.ram_size
        # LiveVM's command line already has -nodefaults -display none (plus its own console, command channel
        # and private monitor, none of which shows in what the conversations ask about).
        self.vm = LiveVM.start(memory=f"{spec.memory_mib}M", balloon_id=spec.device_id if spec.device else None,
                               paused=spec.paused, guest=spec.guest, qemu=None if spec.qemu == "host" else spec.qemu)
        self.socket_path = self.vm.qmp_socket
        #: "major.minor" of the QEMU that answered (the emulator profile to compare with)
        self.version = ".".join(self.vm.qemu_version.split(".")[:2])

    def guest_run(self, live_command: str, emulated: dict) -> Any:
        return self.vm.exec(live_command)

    def stop(self) -> None:
        self.vm.stop()


class EmulatedQEMU:
    """``balloonlab emulate`` in a subprocess, with the same command line as the real QEMU."""

    kind = "emulator"

    def __init__(self, spec: VMSpec, version: str, timeout: float = 20.0,
                 qemu_args: list[str] | None = None, kernel: str | None = None) -> None:
        """``qemu_args`` replaces the options derived from ``spec`` (for command-line tests); ``kernel`` is the
        emulated Linux's kernel (default: the live guest image's, so both sides run the same kernel)."""
        self.spec = spec
        self.ram_size = spec.ram_size
        self._dir = tempfile.mkdtemp(prefix="balloonlab-diff-")
        self.socket_path = os.path.join(self._dir, "qmp.sock")
        args = spec.common_args() if qemu_args is None else qemu_args
        self.argv = [sys.executable, "-m", "balloonlab", "emulate",
                     "-qmp", f"unix:{self.socket_path},server=on,wait=off", *args,
                     "--guest", "linux" if spec.guest else "nodriver", "--qemu-version", version,
                     *spec.emulator_args]
        if spec.guest:
            self.argv += ["--guest-kernel", kernel or guest_kernel()]
        self._log = open(os.path.join(self._dir, "emulator.log"), "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(self.argv)}` exited with {self.proc.returncode}: {self.log()}")
            if os.path.exists(self.socket_path):
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(self.socket_path)
                        probe.recv(4096)  # the greeting: the server is ready for a conversation
                        return
                    except OSError:
                        pass
            time.sleep(0.05)
        raise RuntimeError(f"the emulator did not listen on {self.socket_path} within {timeout} s: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return Path(self._dir, "emulator.log").read_text(errors="replace")[-2000:]

    def guest_run(self, live_command: str, emulated: dict) -> Any:
        raise NotImplementedError("the emulated guest is driven through QMP (conversation.GuestRun)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class Pair:
    """A real QEMU and an emulator started from one :class:`VMSpec` (started together, stopped together)."""

    def __init__(self, spec: VMSpec) -> None:
        self.spec = spec
        # The emulator answers as the real QEMU's version: known before starting it for the host binary, and
        # from the tree's metadata for Debian 13's.
        self.version = qemu_version() if spec.qemu == "host" else _tree_version(spec.qemu)
        self.real: RealQEMU | None = None
        self.emu: EmulatedQEMU | None = None
        try:
            results = _both(lambda: RealQEMU(spec), lambda: EmulatedQEMU(spec, self.version))
            self.real, self.emu = results
        except BaseException:
            self.stop()
            raise
        if self.real.version != self.version:
            self.stop()
            raise RuntimeError(f"expected QEMU {self.version}, the real one greeted as {self.real.version}")

    def run(self, conversation: Conversation) -> tuple[Verdict, list[Observation], list[Observation]]:
        """Run ``conversation`` on both sides at once and compare the runs."""
        real, emu = _both(lambda: run_conversation(conversation, self.real),
                          lambda: run_conversation(conversation, self.emu))
        return compare(real, emu, self.spec.ram_size, self.version), real, emu

    def stop(self) -> None:
        for side in (self.real, self.emu):
            if side is not None:
                side.stop()


def _tree_version(name: str) -> str:
    from balloonlab.live.debian_qemu import find_debian_qemu

    tree = find_debian_qemu(name)
    if tree is None:
        raise RuntimeError(f"no {name} QEMU tree (balloonlab guest qemu)")
    return ".".join(tree.version.split(".")[:2])


def _both(first, second) -> tuple[Any, Any]:
    """Run two callables in parallel threads; re-raise the first exception (after both finished)."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def call(i: int, fn) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # a side that did start must still be stopped by the caller: return what exists via the exception
        for r in results:
            if r is not None and hasattr(r, "stop"):
                r.stop()
        raise errors[0]
    return results[0], results[1]


def check(pair: Pair, conversation: Conversation) -> Verdict:
    """Run ``conversation`` on both sides; fail with every mismatch, print every documented difference used."""
    verdict, real, emu = pair.run(conversation)
    for used in verdict.allowed:
        print(f"documented difference ({conversation.name}): {used}")
    if not verdict.ok:
        transcript = write_transcript(conversation, pair, real, emu)
        raise AssertionError(f"conversation {conversation.name!r}: the emulator "
                             f"(--qemu-version {pair.version}) differs from real QEMU {pair.real.vm.qemu_version}"
                             f" (both transcripts: {transcript}):\n  " + "\n  ".join(verdict.mismatches))
    return verdict


def write_transcript(conversation: Conversation, pair: Pair, real: list[Observation],
                     emu: list[Observation]) -> Path:
    """Both sides' conversation, step by step, bytes sent and lines received, side by side in one text file."""
    name = "".join(c if c.isalnum() else "-" for c in conversation.name).strip("-")
    path = artifacts_dir("differential") / f"{name}-qemu-{pair.version}.txt"
    out = [f"conversation {conversation.name!r}: real QEMU {pair.real.vm.qemu_version} vs emulator "
           f"--qemu-version {pair.version}", ""]
    for r, e in zip(real, emu):
        out.append(f"== {r.label} [{r.rule}]" + (f" value qemu={r.value!r} emulator={e.value!r}"
                                                  if r.value is not None or e.value is not None else ""))
        if r.sent:
            out.append(f"   sent: {r.sent[:300]!r}")
        for side, obs in (("qemu    ", r), ("emulator", e)):
            for line in obs.lines:
                out.append(f"   {side} {line.decode(errors='replace').rstrip()[:2000]}")
    path.write_text("\n".join(out) + "\n")
    return path


#: The real QEMUs a differential test runs against (VMSpec.qemu), as pytest params with readable ids.
PROFILES = ["host", "debian13"]
PROFILE_IDS = ["host-qemu", "debian13-qemu-10.0"]


def needs(spec: VMSpec) -> tuple[str, ...]:
    """The named test requirements (tests/fixtures/requirements.py) a pair for ``spec`` needs."""
    return (("qemu",) + (("debian13-qemu",) if spec.qemu == "debian13" else ())
            + (("guest-image",) if spec.guest else ()))


def start_pair(spec: VMSpec):
    """Generator for a pytest fixture: skip (in CI: fail) with a reason when a side cannot run, else yield a
    started Pair."""
    from tests.fixtures.requirements import require

    require(*needs(spec))
    pair = Pair(spec)
    try:
        yield pair
    finally:
        pair.stop()
