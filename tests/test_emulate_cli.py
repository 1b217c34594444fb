"""``balloonlab emulate``: the qemu-system style command line, and the command as a real subprocess that a
qemu.qmp client talks to and ``quit`` (or a signal) stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys

import pytest
from qemu.qmp import QMPClient

from balloonlab.emulator.config import BalloonSpec
from balloonlab.cli.emulate import main, parse_args
from balloonlab.errors import EmulatorOptionError
from tests.helpers import wait_until


# -- parsing --------------------------------------------------------------------------------------------------------
def test_a_qemu_command_line_becomes_a_machine_config():
    opts = parse_args(["-qmp", "unix:/tmp/x/q.sock,server=on,wait=off", "-m", "512", "-nodefaults",
                       "-display", "none", "-accel", "tcg", "-machine", "pc,accel=tcg", "-S",
                       "-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,guest-stats-polling-interval=2",
                       "--guest", "buggy", "--qemu-version=7.2", "--clock", "virtual", "--seed", "5"])
    c = opts.config
    assert opts.socket_path == "/tmp/x/q.sock"
    assert (c.ram_size, c.start_paused, c.nodefaults, c.guest, c.qemu_version, c.clock, c.seed) == (
        512 << 20, True, True, "buggy", "7.2", "virtual", 5)
    assert c.balloons == [BalloonSpec(id="balloon0", deflate_on_oom=True, polling_interval=2)]


@pytest.mark.parametrize("memory, size", [("512", 512 << 20), ("512M", 512 << 20), ("1G", 1 << 30),
                                          ("size=256M", 256 << 20), ("1.5G", 3 << 29), ("128m", 128 << 20)])
def test_memory_spellings(memory, size):
    assert parse_args(["-m", memory]).config.ram_size == size
    assert parse_args(["--m", memory]).config.ram_size == size  # QEMU accepts --option too


@pytest.mark.parametrize("spec", ["unix:/run/q.sock,server=on,wait=off", "unix:/run/q.sock,server,nowait",
                                  "unix:/run/q.sock", "unix:/run/q.sock,wait=no"])
def test_qmp_socket_spellings(spec):
    assert parse_args(["-qmp", spec]).socket_path == "/run/q.sock"


def test_defaults_and_the_legacy_balloon():
    opts = parse_args([])
    assert opts.socket_path is None and opts.config.ram_size == 128 << 20 and opts.config.balloons == []
    assert parse_args(["-balloon", "virtio"]).config.balloons == [BalloonSpec(legacy=True)]
    assert parse_args(["-device", "virtio-balloon"]).config.balloons == [BalloonSpec()]  # QEMU's alias


@pytest.mark.parametrize("argv, message", [
    (["-bogus-option"], "-bogus-option: invalid option"),
    (["-m"], "-m: requires an argument"),
    (["-m", "lots"], "-m lots: not a size"),
    (["-m", "512M,slots=2"], "-m 512M,slots=2: unsupported memory option 'slots'"),
    (["-qmp", "tcp:127.0.0.1:4444,server=on,wait=off"], "unix sockets only"),
    (["-qmp", "unix:/tmp/q.sock,server=on,wait=on"], "wait=on is not supported"),
    (["-qmp", "unix:/tmp/q.sock,server=off"], "only listens"),
    (["-qmp", "stdio"], "only unix:PATH"),
    (["-qmp", "unix:/a,server=on,wait=off", "-qmp", "unix:/b,server=on,wait=off"], "only one QMP socket"),
    (["-device", "e1000"], "-device e1000: balloonlab emulates only virtio-balloon-pci"),
    (["-device", "virtio-balloon-pci,bogus=1"], "property 'bogus' is not modelled"),
    (["-device", "virtio-balloon-pci,deflate-on-oom=maybe"], "expects 'on' or 'off'"),
    (["-device", "virtio-balloon-pci,free-page-hint=on"],
     "-device virtio-balloon-pci,free-page-hint=on: 'free-page-hint' requires 'iothread' to be set"),
    (["-device", "virtio-balloon-pci,guest-stats-polling-interval=-1"], "timer value must be greater than zero"),
    (["-device", "virtio-balloon-pci,guest-stats-polling-interval=4294967296"], "timer value is too big"),
    (["-device", "virtio-balloon-pci", "-balloon", "virtio"], "Only one balloon device is supported"),
    (["-balloon", "none"], "only '-balloon virtio'"),
    (["-display", "gtk"], "no display"),
    (["-accel", "hvf"], "only tcg or kvm"),
    (["-machine", "microvm"], "not emulated"),
    (["--guest", "solaris"], "--guest: 'solaris' is not one of linux"),
    (["--qemu-version", "8.0"], "--qemu-version: '8.0' is not one of 7.2, 9.2, 10.0"),
    (["--clock", "fast"], "--clock: 'fast' is not one of real, virtual"),
    (["--seed", "x"], "expects an integer"),
    (["-S=1"], "invalid option"),
    (["stray"], "unexpected argument"),
])
def test_bad_options_are_refused_naming_the_option(argv, message):
    with pytest.raises(EmulatorOptionError) as info:
        parse_args(argv)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_main_reports_a_bad_option_in_one_line_and_exits_1(capsys):
    assert main(["-bogus-option"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("balloonlab emulate: -bogus-option: invalid option")


def test_main_reports_a_bad_guest_kernel_from_the_model(capsys, tmp_path):
    assert main(["-qmp", f"unix:{tmp_path}/q.sock,server=on,wait=off", "--guest-kernel", "2.4"]) == 1
    assert "2.4" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "q.sock")


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: balloonlab emulate") and "-balloon virtio" in out and "--qemu-version" in out


# -- the command as a process ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def emulate_process(*args: str):
    """``python -m balloonlab emulate ARGS``; yields (process, socket path from its first stdout line)."""
    proc = subprocess.Popen([sys.executable, "-m", "balloonlab", "emulate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = proc.stdout.readline().strip()
        assert path, f"no socket path printed; stderr: {proc.stderr.read()}"
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def wait_exit(proc: subprocess.Popen, timeout: float = 20) -> int:
    wait_until(lambda: proc.poll() is not None, timeout, interval=0.02)
    return proc.poll()


def test_emulate_subprocess_serves_a_qmpclient_until_quit(tmp_path):
    sock = str(tmp_path / "qmp.sock")
    args = ["-qmp", f"unix:{sock},server=on,wait=off", "-m", "512M", "-nodefaults", "-display", "none",
            "-device", "virtio-balloon-pci,id=balloon0", "-S", "--qemu-version", "7.2"]
    with emulate_process(*args) as (proc, path):
        assert path == sock
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        async def session():
            client = QMPClient("balloonlab-cli-test")
            await client.connect(path)
            version = client.greeting.QMP.version["qemu"]
            summary = await client.execute("query-memory-size-summary")
            kind = await client.execute("qom-get", {"path": "/machine/peripheral/balloon0", "property": "type"})
            status = await client.execute("query-status")
            assert await client.execute("quit") == {}
            with contextlib.suppress(EOFError):
                await client.disconnect()
            return version, summary, kind, status

        version, summary, kind, status = asyncio.run(asyncio.wait_for(session(), 60))
        assert (version["major"], version["minor"]) == (7, 2)
        assert summary["base-memory"] == 512 << 20 and kind == "virtio-balloon-pci"
        assert status["status"] == "prelaunch"
        assert wait_exit(proc) == 0
        assert not os.path.exists(sock)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_emulate_subprocess_stops_on_a_signal_and_cleans_its_private_socket(sig):
    with emulate_process("-balloon", "virtio") as (proc, path):
        directory = os.path.dirname(path)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        proc.send_signal(sig)
        assert wait_exit(proc) == 0
        assert not os.path.exists(path) and not os.path.exists(directory)


def test_balloonlab_console_entry_refuses_unknown_options():
    proc = subprocess.run([sys.executable, "-m", "balloonlab", "emulate", "-bogus-option"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("balloonlab emulate: -bogus-option: invalid option "
                                   "(see balloonlab emulate --help)")
