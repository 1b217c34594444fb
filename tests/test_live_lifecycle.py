"""No QEMU outlives the Python process that launched it: killed parent, normal exit, `balloonlab launch`.

Each test runs a small Python program in a child process that launches QEMU (without a guest: the lifecycle
does not depend on it, and it costs no boot), then ends that program in some way and checks the QEMU is gone.
Whatever happens, the test kills any QEMU it learned about in its own teardown.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from balloonlab.errors import LaunchError
from balloonlab.live.launcher import VMFiles, build_argv, memory_mib
from tests.fixtures.qemu import guest_image, qemu_binary, qmp_run  # noqa: F401  (fixture)
from tests.helpers import process_gone, processes, wait_until

REPO = Path(__file__).resolve().parents[1]


class Child:
    """A Python child running ``code``; its stdout lines are read by a thread.  Killed (with its QEMU) on cleanup."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.qemu_pids: list[int] = []
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def line(self, timeout: float = 60) -> str:
        """The next stdout line; fails with the child's stderr when there is none."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            self.proc.kill()
            raise AssertionError(f"the child printed no more lines; stderr:\n{self.proc.stderr.read()}")
        return line

    def message(self) -> dict:
        data = json.loads(self.line())
        self.qemu_pids.append(data["pid"])
        return data

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(10)  # ends at EOF, now that the child is gone
        self.proc.stdout.close()
        self.proc.stderr.close()
        for pid in self.qemu_pids:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def child():
    children: list[Child] = []

    def start(code: str, *args: str) -> Child:
        children.append(Child(code, *args))
        return children[-1]

    yield start
    for c in children:
        c.cleanup()


LAUNCH_IN_A_THREAD = """
    import json, sys, threading, time
    from pathlib import Path
    from balloonlab.live.launcher import LiveVM
    box = {}
    # Launched from a thread that ends at once: the parent-death signal must not fire with it.
    t = threading.Thread(target=lambda: box.update(vm=LiveVM.start(guest=False, workdir=Path(sys.argv[1]))))
    t.start(); t.join()
    vm = box["vm"]
    print(json.dumps({"pid": vm.pid, "qmp": vm.qmp_socket}), flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)          # no stop(): the finalizer at interpreter exit must stop QEMU
    time.sleep(600)          # killed by the test
"""


@pytest.mark.qemu
def test_qemu_dies_with_a_sigkilled_parent(child, qemu_binary, tmp_path) -> None:
    c = child(LAUNCH_IN_A_THREAD, str(tmp_path / "vm"), "sleep")
    info = c.message()
    assert not process_gone(info["pid"])
    status, = qmp_run(info["qmp"], "query-status")  # alive and answering after the launching thread ended
    assert status["status"] == "running"

    c.proc.send_signal(signal.SIGKILL)  # no Python cleanup can run: only PR_SET_PDEATHSIG can stop QEMU
    c.proc.wait()
    assert wait_until(lambda: process_gone(info["pid"]), timeout=30)


@pytest.mark.qemu
def test_interpreter_exit_stops_a_forgotten_vm(child, qemu_binary, tmp_path) -> None:
    c = child(LAUNCH_IN_A_THREAD, str(tmp_path / "vm"), "exit")
    info = c.message()
    assert c.proc.wait(60) == 0
    assert process_gone(info["pid"])  # stopped and reaped before the interpreter was gone
    assert not Path(info["qmp"]).exists()


@pytest.mark.qemu
def test_balloonlab_launch_runs_until_sigterm(child, qemu_binary, tmp_path) -> None:
    workdir = tmp_path / "launch"
    c = child("import sys; from balloonlab.cli import main; sys.exit(main(sys.argv[1:]))",
              "launch", "--no-guest", "-m", "256M", "--workdir", str(workdir))
    first = c.line()
    m = first.split()
    assert first.startswith("QEMU ") and m[3] == "pid", first
    qemu_pid = int(m[4].rstrip(";"))
    c.qemu_pids.append(qemu_pid)
    socket_line = c.line()
    assert socket_line == f"QMP socket: {workdir / 'qmp.sock'}\n"
    assert c.line().strip() == f"attach:   qmp-shell {workdir / 'qmp.sock'}"
    summary, = qmp_run(str(workdir / "qmp.sock"), "query-memory-size-summary")
    assert summary["base-memory"] == 256 << 20

    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(60) == 0
    assert process_gone(qemu_pid)
    assert not (workdir / "qmp.sock").exists()


@pytest.mark.qemu
def test_balloonlab_launch_stops_at_ctrl_c_while_the_guest_boots(child, guest_image, tmp_path) -> None:
    workdir = tmp_path / "launch"
    c = child("import sys; from balloonlab.cli import main; sys.exit(main(sys.argv[1:]))",
              "launch", "-m", "256M", "--workdir", str(workdir))
    # QEMU's QMP socket is up long before the TCG guest is ready: Ctrl-C now lands in the boot wait.
    qemu = wait_until(lambda: (workdir / "qmp.sock").exists()
                      and [p.pid for p in processes() if p.ppid == c.proc.pid and p.state not in "ZX"], timeout=60)
    assert qemu, "QEMU did not come up"
    c.qemu_pids.extend(p.pid for p in processes() if p.ppid == c.proc.pid)
    c.proc.send_signal(signal.SIGINT)
    # Before the fix the boot ran on to the end (printing its banner) and the exit status was 0.
    assert c.proc.wait(60) == 128 + signal.SIGINT
    c._reader.join(10)
    printed = []
    while (line := c._lines.get(timeout=10)) is not None:
        printed.append(line)
    assert printed == []  # no "QEMU ... running" banner: it did not wait for the guest
    assert "SIGINT while starting: QEMU stopped" in c.proc.stderr.read()
    assert all(process_gone(pid) for pid in c.qemu_pids) and c.qemu_pids
    assert not (workdir / "qmp.sock").exists()


def test_launch_reports_a_bad_memory_size(capsys) -> None:
    from balloonlab.cli.launch import main

    assert main(["--no-guest", "-m", "12K"]) == 1
    assert capsys.readouterr().err == ("balloonlab launch: memory 12K is 12.0 KiB, less than any guest can keep (at "
                                       "least 16.0 MiB; write e.g. 256M)\n")


@pytest.mark.parametrize("memory, mib", [("512M", 512), ("1G", 1024), ("1.5G", 1536), (256 << 20, 256)])
def test_memory_sizes(memory, mib) -> None:
    assert memory_mib(memory) == mib


@pytest.mark.parametrize("memory, words", [(512, "did you mean '512M'"), ("512.5M", "whole number of MiB"),
                                            ("lots", "not a size")])
def test_bad_memory_sizes(memory, words) -> None:
    with pytest.raises(LaunchError, match=words):
        memory_mib(memory)


def test_command_line_shape(tmp_path) -> None:
    files = VMFiles(tmp_path)
    argv = build_argv(files, paused=True, balloon_id="b1", extra_args=["-smp", "2"])
    assert argv[:5] == ["qemu-system-x86_64", "-name", "balloonlab", "-accel", "tcg"]
    assert argv[argv.index("-m") + 1] == "512M"
    assert "-S" in argv and "-kernel" not in argv and argv[-2:] == ["-smp", "2"]
    assert argv[argv.index("-device") + 1] == "virtio-balloon-pci,id=b1"
    assert argv[argv.index("-qmp") + 1] == f"unix:{files.qmp_socket},server=on,wait=off"
    assert "-device" not in build_argv(files, balloon_id=None)
    assert "virtio-balloon-pci" in build_argv(files, balloon_id="")


def test_balloon_options_become_device_properties_spelled_as_qemu_wants(tmp_path) -> None:
    files = VMFiles(tmp_path)
    argv = build_argv(files, balloon_options={"free-page-reporting": True, "deflate-on-oom": False,
                                              "guest-stats-polling-interval": 2})
    assert argv[argv.index("-device") + 1] == ("virtio-balloon-pci,id=balloon0,free-page-reporting=on,"
                                               "deflate-on-oom=off,guest-stats-polling-interval=2")
    with pytest.raises(LaunchError, match="invalid device property name 'a=b,c'"):
        build_argv(files, balloon_options={"a=b,c": True})
    with pytest.raises(LaunchError, match="balloon_options need a balloon device"):
        build_argv(files, balloon_id=None, balloon_options={"deflate-on-oom": True})
    assert build_argv(files, balloon_options={"x": "a,b"})[argv.index("-device") + 1].endswith(",x=a,,b")


def test_user_text_cannot_add_qemu_options(tmp_path) -> None:
    """An id cannot smuggle in device properties, and a comma in a path is escaped as QEMU's parser wants."""
    with pytest.raises(LaunchError, match="invalid device id"):
        build_argv(VMFiles(tmp_path), balloon_id="b,deflate-on-oom=on")
    odd = tmp_path / "a,b"
    odd.mkdir()
    argv = build_argv(VMFiles(odd))
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path}/a,,b/qmp.sock,server=on,wait=off"
