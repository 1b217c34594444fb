"""A real qemu-system-x86_64 (TCG) with the tiny guest: boot, QMP, guest commands, and a clean stop.

Boots are expensive (a few CPU-seconds each), so one guest is shared by the module (``live_vm``; tests leave it
as they found it) and only the paused test boots a second one.  VMs without a guest (``guest=False``) are cheap
and carry the process-lifecycle tests.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
from qemu.qmp import ExecuteError, QMPClient

from balloonlab.errors import GuestExecError, LaunchError
from balloonlab.live.guest_image import READY_MARKER, WORKLOAD_DIR
from balloonlab.stats import UNSET, stats_for_version
from tests.fixtures.qemu import (  # noqa: F401  (fixtures)
    guest_image,
    live_vm,
    qemu_binary,
    qemu_children,
    qmp_run,
    start_vm,
)
from tests.helpers import process_gone, wait_until

pytestmark = pytest.mark.qemu
MIB = 1 << 20


def stat_keys(vm) -> list[str]:
    major, minor = (int(x) for x in vm.qemu_version.split(".")[:2])
    return [info.qmp_key for info in stats_for_version((major, minor))]


def guest_stats(vm, path: str = "/machine/peripheral/balloon0") -> dict:
    return qmp_run(vm.qmp_socket, ("qom-get", {"path": path, "property": "guest-stats"}))[0]


# --- the shared guest ------------------------------------------------------------------------------------------

def test_guest_boots_to_its_ready_line(live_vm, guest_image, qemu_binary) -> None:
    assert live_vm.alive
    assert live_vm.guest_info == {"kernel": guest_image.kernel_version, "driver": "yes", "device": "yes",
                                  "channel": "ttyS1"}
    assert READY_MARKER in live_vm.console_output()
    assert live_vm.boot_seconds is not None and live_vm.boot_seconds > 0
    version = subprocess.run([qemu_binary, "--version"], capture_output=True, text=True).stdout
    assert f"version {live_vm.qemu_version}" in version
    assert stat.S_IMODE(live_vm.workdir.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(live_vm.workdir.joinpath("qmp.sock").stat().st_mode)
    assert live_vm.qmp_socket == str(live_vm.workdir / "qmp.sock")


def test_the_driver_reported_at_boot(live_vm) -> None:
    stats = guest_stats(live_vm)
    assert set(stats["stats"]) == set(stat_keys(live_vm))
    reported = {k: v for k, v in stats["stats"].items() if v != UNSET}
    # A Linux 6.1 guest sends tags 0-9 (QEMU >= 9.2 would list six more keys, left unset).
    assert len(reported) == 10, stats
    assert stats["last-update"] > 0
    assert 400 * MIB < reported["stat-total-memory"] < 512 * MIB
    assert 0 < reported["stat-free-memory"] <= reported["stat-total-memory"]
    actual, = qmp_run(live_vm.qmp_socket, "query-balloon")
    assert actual == {"actual": 512 * MIB}


def test_exec_reads_the_guest_meminfo(live_vm) -> None:
    meminfo = live_vm.exec("cat /proc/meminfo")
    mem_total_kib = int(re.search(r"^MemTotal:\s+(\d+) kB$", meminfo, re.M).group(1))
    # The driver's total-memory is the guest kernel's totalram: the same number MemTotal shows.
    assert guest_stats(live_vm)["stats"]["stat-total-memory"] == mem_total_kib * 1024


def test_exec_returns_output_and_status_exactly(live_vm) -> None:
    assert live_vm.exec("printf 'no newline'") == "no newline"
    assert live_vm.exec("echo out; echo err >&2") == "out\nerr\n"
    assert live_vm.exec("printf '%s\\n' \"it's\" 'a \"quoted\"' 'ünïcode'\necho second line") == \
        "it's\na \"quoted\"\nünïcode\nsecond line\n"
    assert live_vm.exec("pwd") == f"{WORKLOAD_DIR}\n"
    assert re.search(rf"^tmpfs {WORKLOAD_DIR} tmpfs ", live_vm.exec("cat /proc/mounts"), re.M)
    assert live_vm.exec("seq 1 30000 | wc -l") == "30000\n"
    big = live_vm.exec("seq 1 30000")  # ~170 KB through the serial port
    assert big.splitlines() == [str(i) for i in range(1, 30001)]
    assert live_vm.exec("read x; echo \"[$x]\"") == "[]\n"  # stdin is /dev/null, not the channel

    result = live_vm.run("echo partial; exit 7")
    assert (result.output, result.exit_code) == ("partial\n", 7)
    with pytest.raises(GuestExecError, match="exited with status 3") as info:
        live_vm.exec("echo before failing; exit 3")
    assert info.value.exit_code == 3 and info.value.output == "before failing\n"
    assert live_vm.exec("exit 5", check=False) == ""


def test_exec_timeout_leaves_the_channel_usable(live_vm) -> None:
    with pytest.raises(GuestExecError, match="did not finish") as info:
        live_vm.exec("sleep 2; echo late output", timeout=0.3)
    assert info.value.exit_code is None
    # The next command runs after the slow one in the guest; its late output must not leak into ours.
    assert live_vm.exec("echo next", timeout=30) == "next\n"


def test_exec_from_many_threads(live_vm) -> None:
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = live_vm.exec(f"echo thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: f"thread {i}\n" for i in range(6)}


def test_writing_96_mib_to_tmpfs_lowers_free_memory(live_vm) -> None:
    path = "/machine/peripheral/balloon0"

    async def scenario() -> tuple[dict, dict]:
        qmp = QMPClient("balloonlab-tests")
        await qmp.connect(live_vm.qmp_socket)
        try:
            async def report_after(moment: float) -> dict:
                # last-update is the host wall clock in whole seconds: a value > moment means a later report.
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    stats = await qmp.execute("qom-get", {"path": path, "property": "guest-stats"})
                    if stats["last-update"] > moment:
                        return stats
                    await asyncio.sleep(0.1)
                raise AssertionError(f"no guest report after {moment} within 30 s (polling every second)")

            await qmp.execute("qom-set", {"path": path, "property": "guest-stats-polling-interval", "value": 1})
            try:
                before = await report_after(time.time())
                await asyncio.to_thread(live_vm.exec, "dd if=/dev/zero of=fill bs=1M count=96 2>/dev/null")
                after = await report_after(time.time())
            finally:
                await qmp.execute("qom-set", {"path": path, "property": "guest-stats-polling-interval",
                                              "value": 0})
                await asyncio.to_thread(live_vm.exec, "rm -f fill")
            return before["stats"], after["stats"]
        finally:
            await qmp.disconnect()

    before, after = asyncio.run(scenario())
    assert before["stat-free-memory"] - after["stat-free-memory"] >= 90 * MIB
    assert after["stat-disk-caches"] - before["stat-disk-caches"] >= 90 * MIB  # tmpfs pages are page cache
    assert after["stat-total-memory"] == before["stat-total-memory"]


# --- VMs of their own ------------------------------------------------------------------------------------------

def test_paused_vm_has_unset_stats_until_cont(start_vm) -> None:
    vm = start_vm(paused=True)
    assert vm.boot_seconds is None and vm.guest_info == {}
    status, stats = qmp_run(vm.qmp_socket, "query-status",
                            ("qom-get", {"path": "/machine/peripheral/balloon0", "property": "guest-stats"}))
    assert status["running"] is False and status["status"] == "prelaunch"
    assert stats == {"stats": {key: UNSET for key in stat_keys(vm)}, "last-update": 0}
    assert READY_MARKER not in vm.console_output()

    qmp_run(vm.qmp_socket, "cont")
    vm.wait_ready(90)
    assert vm.guest_info["driver"] == "yes"
    stats = guest_stats(vm)
    assert stats["last-update"] > 0 and stats["stats"]["stat-free-memory"] != UNSET
    assert vm.exec("echo alive") == "alive\n"

    # stop() while another thread waits for a long command: the command fails at once, nothing hangs.
    errors: list[Exception] = []

    def long_command() -> None:
        try:
            vm.exec("echo long-command-started > /dev/console; sleep 600", timeout=600)
        except GuestExecError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=long_command)
    waiter.start()
    assert wait_until(lambda: "long-command-started" in vm.console_output(), timeout=30)
    vm.stop()
    waiter.join(30)
    assert not waiter.is_alive() and len(errors) == 1 and not vm.alive


def test_no_guest_answers_qmp_but_never_reports(start_vm) -> None:
    vm = start_vm(guest=False, balloon_id="")  # no kernel; the device without an id
    assert "-kernel" not in vm.argv
    children, stats = qmp_run(
        vm.qmp_socket, ("qom-list", {"path": "/machine/peripheral-anon"}),
        ("qom-get", {"path": "/machine/peripheral-anon/device[0]", "property": "guest-stats"}),
    )
    assert {"name": "device[0]", "type": "child<virtio-balloon-pci>"} in children
    assert stats == {"stats": {key: UNSET for key in stat_keys(vm)}, "last-update": 0}
    with pytest.raises(GuestExecError, match="guest=False"):
        vm.exec("true")
    with pytest.raises(LaunchError, match="guest=False"):
        vm.wait_ready(1)


def test_without_a_balloon_device(start_vm) -> None:
    vm = start_vm(guest=False, balloon_id=None, memory="256M")
    with pytest.raises(ExecuteError) as info:
        qmp_run(vm.qmp_socket, "query-balloon")
    assert info.value.error_class == "DeviceNotActive"
    summary, = qmp_run(vm.qmp_socket, "query-memory-size-summary")
    assert summary["base-memory"] == 256 * MIB


def test_stop_leaves_nothing_behind(start_vm) -> None:
    vm = start_vm(guest=False)
    pid, workdir = vm.pid, vm.workdir
    assert pid in qemu_children()
    # A client holding the QMP socket (QEMU serves one at a time) must not stop the shutdown: the launcher
    # quits over its private monitor, so QEMU exits with status 0 rather than by a signal.
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(vm.qmp_socket)
        assert client.recv(4096).startswith(b'{"QMP"')
        vm.stop()
    assert vm.returncode == 0
    assert not vm.alive and process_gone(pid) and pid not in qemu_children()
    assert not workdir.exists()
    vm.stop()  # a second stop is a no-op
    assert vm.console_output() == ""  # no guest, so nothing was printed; still readable after stop


def test_a_killed_qemu_is_noticed_and_cleaned_up(start_vm) -> None:
    vm = start_vm(guest=False)
    os.kill(vm.pid, signal.SIGKILL)
    assert wait_until(lambda: not vm.alive, timeout=30)
    assert vm.returncode == -signal.SIGKILL
    workdir = vm.workdir
    vm.stop()
    assert not workdir.exists() and vm.pid not in qemu_children()


def test_given_workdir_keeps_the_logs_and_loses_the_sockets(start_vm, tmp_path) -> None:
    workdir = tmp_path / "vm"
    vm = start_vm(guest=False, workdir=workdir)
    assert vm.qmp_socket == str(workdir / "qmp.sock")
    with pytest.raises(LaunchError, match=r"already holds qmp\.sock"):
        start_vm(guest=False, workdir=workdir)
    vm.stop()
    assert sorted(p.name for p in workdir.iterdir()) == ["qemu.stderr", "serial.log"]


def test_qemu_errors_are_quoted_in_the_launch_error(start_vm) -> None:
    with pytest.raises(LaunchError) as info:
        start_vm(guest=False, extra_args=["-no-such-option"])
    message = str(info.value)
    assert "exited with status 1" in message and "-no-such-option: invalid option" in message
    stderr_log = re.search(r"QEMU stderr \((\S+)\)", message).group(1)
    assert not os.path.exists(stderr_log)  # the private work dir went with the failed start
