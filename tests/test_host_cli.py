"""``balloonlab host`` as a real subprocess: one socket per VM, stopped by a signal or by ``quit`` to any VM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from tests.helpers import balloonlab_process
from tests.test_emulate_cli import wait_exit

GiB = 1 << 30


@contextlib.contextmanager
def host_process(*args: str, vms: int):
    """``python -m balloonlab host ARGS``; yields (process, {name: socket}) from its first lines."""
    with balloonlab_process("host", *args) as proc:
        header = proc.stdout.readline()
        assert header.startswith("host:"), f"no header; stderr: {proc.stderr.read()}"
        yield proc, dict(proc.stdout.readline().split() for _ in range(vms))


def qmp(socket: str, command: str, **args):
    client = QEMUMonitorProtocol(socket)
    client.connect()
    try:
        return client.cmd(command, **args)
    finally:
        client.close()


def test_every_vm_has_its_own_socket_and_a_quit_to_one_stops_the_host_saying_which(tmp_path):
    args = ["--vms", "3", "-m", "3G", "--vm-memory", "1G", "--free-page-reporting", "--deflate-on-oom",
            "--clock", "virtual", "--socket-dir", str(tmp_path)]
    with host_process(*args, vms=3) as (proc, sockets):
        assert sockets == {f"vm{i}": str(tmp_path / f"vm{i}.sock") for i in range(3)}
        for path in sockets.values():
            assert qmp(path, "query-balloon") == {"actual": GiB}
            for prop in ("free-page-reporting", "deflate-on-oom"):
                assert qmp(path, "qom-get", path="/machine/peripheral/balloon0", property=prop) is True
        qmp(sockets["vm0"], "x-balloonlab-advance", seconds=60)  # one clock: every VM moved
        assert qmp(sockets["vm2"], "x-balloonlab-status")["vm-clock-ns"] >= 60 * 10**9
        with contextlib.suppress(EOFError):  # the VM may close the connection before the client closes it
            qmp(sockets["vm1"], "quit")
        assert wait_exit(proc) == 0
        assert "vm1 received QMP 'quit'" in proc.stdout.read()
        assert not any(os.path.exists(p) for p in sockets.values())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_vm_and_removes_every_socket(sig):
    with host_process("--vms", "2", vms=2) as (proc, sockets):
        proc.send_signal(sig)
        assert wait_exit(proc) == 0
        assert f"{sig.name}; every VM stopped" in proc.stdout.read()
        assert not any(os.path.exists(p) or os.path.exists(os.path.dirname(p)) for p in sockets.values())


@pytest.mark.parametrize("args, message", [
    (["--vms", "0"], "at least one VM"),
    (["-m", "lots"], "not a size"),
    (["--workloads", "sleepy"], "unknown workload 'sleepy'"),
    (["--workloads", "recording:nope"], "nor a shipped recording (shipped: "),
    (["--vm-memory", "8"], "VM memory 8 is 8.0 MiB, less than any guest can keep"),
    (["-m", "0"], "host memory 0 is not a size"),
    (["--swap=-1G"], "a size cannot be negative"),
])
def test_bad_options_are_refused_in_one_line(args, message):
    proc = subprocess.run([sys.executable, "-m", "balloonlab", "host", *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode in (1, 2)
    assert message in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_sizes_follow_emulate_host_a_bare_number_is_mib_and_no_swap_is_allowed():
    with host_process("--vms", "1", "-m", "2048", "--vm-memory", "512", "--swap", "0", vms=1) as (proc, sockets):
        assert qmp(sockets["vm0"], "query-balloon") == {"actual": 512 << 20}
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc) == 0
