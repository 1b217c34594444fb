"""Boot a real ``qemu-system-x86_64`` with balloonlab's tiny guest, and never leave it behind.

A :class:`LiveVM` is one QEMU process with a virtio-balloon device, a QMP unix socket for clients
(``vm.qmp_socket``: balloonlab's client, qmp-shell, ``%%qmp``), a second, private QMP monitor the launcher uses to
``quit`` (QEMU serves one client per monitor, so a connected lab never blocks the shutdown), the guest console in
``vm.serial_log`` and a command channel on the guest's second serial port (``vm.exec``).

QEMU runs with ``-accel tcg`` by default.  ``accel="kvm"`` is accepted for machines where KVM works, but it is
never the default: on the machines balloonlab is developed on ``/dev/kvm`` exists and the guest hangs.

No orphans: QEMU gets ``PR_SET_PDEATHSIG(SIGKILL)``, so it dies with the Python process even when that process is
SIGKILLed; the parent-death signal follows the *thread* that forked, so every QEMU is forked by one long-lived
spawner thread, never by a short-lived worker.  A ``weakref.finalize`` per VM (which also runs at interpreter
exit, e.g. a Jupyter kernel shutdown) stops VMs that were never stopped.  ``stop()`` escalates from QMP ``quit``
to SIGTERM to SIGKILL, reaps the process and removes the sockets and the private work directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import GuestExecError, InvalidValueError, LaunchError
from ..units import parse_guest_size
from .channel import CommandChannel, ExecResult
from .guest_image import READY_MARKER, GuestImage
from .process import process_rss, spawn, terminate

QEMU_BINARY = "qemu-system-x86_64"
#: Kernel command line of the guest: console on the first serial port, quiet so the log stays short.
KERNEL_APPEND = "console=ttyS0 quiet"
#: Longest path a unix socket can have on Linux (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107
_SERIAL_TAIL = 20


# --- command line ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VMFiles:
    """Paths in a VM's work directory."""

    workdir: Path
    qmp_socket: Path = field(init=False)
    control_socket: Path = field(init=False)
    command_socket: Path = field(init=False)
    serial_log: Path = field(init=False)
    stderr_log: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, file in (("qmp_socket", "qmp.sock"), ("control_socket", "control.sock"),
                           ("command_socket", "command.sock"), ("serial_log", "serial.log"),
                           ("stderr_log", "qemu.stderr")):
            object.__setattr__(self, name, self.workdir / file)

    def all(self) -> tuple[Path, ...]:
        return (self.qmp_socket, self.control_socket, self.command_socket, self.serial_log, self.stderr_log)


def memory_mib(memory: str | int) -> int:
    """RAM in MiB for ``-m``: ``"512M"``, ``"1G"``, or bytes (a bare number is bytes: units.py's rule)."""
    try:
        size = parse_guest_size(memory, "memory")
    except InvalidValueError as exc:
        raise LaunchError(str(exc)) from None
    if size % (1 << 20):
        raise LaunchError(f"memory={memory!r} is not a whole number of MiB")
    return size >> 20


#: What QEMU accepts as a device id (util/id.c id_wellformed).
_QEMU_ID = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _opt(path: Path | str) -> str:
    """A path inside a QEMU ``key=value,...`` option: a comma is written twice, as QEMU's option parser wants."""
    return str(path).replace(",", ",,")


def build_argv(
    files: VMFiles,
    memory: str | int = "512M",
    balloon_id: str | None = "balloon0",
    paused: bool = False,
    image: GuestImage | None = None,
    accel: str = "tcg",
    extra_args: Sequence[str] = (),
    qemu: Sequence[str] = (QEMU_BINARY,),
    balloon_options: Mapping[str, str | int | bool] | None = None,
) -> list[str]:
    """The QEMU command line (a list: never through a shell).  ``image=None`` boots no kernel at all.

    ``balloon_id``: the device's id (QOM ``/machine/peripheral/<id>``); ``""`` adds it without one
    (``/machine/peripheral-anon/device[0]``); ``None`` adds no balloon device at all.  ``balloon_options``: more
    device properties, ``{"free-page-reporting": True, "deflate-on-oom": True}`` (booleans as on/off).
    """
    if balloon_id and not _QEMU_ID.fullmatch(balloon_id):
        raise LaunchError(f"invalid device id {balloon_id!r}: QEMU ids start with a letter and contain only "
                          "letters, digits, '-', '.' and '_'")
    argv = [*qemu, "-name", "balloonlab", "-accel", accel, "-m", f"{memory_mib(memory)}M",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"file,id=console,path={_opt(files.serial_log)}", "-serial", "chardev:console",
            "-chardev", f"socket,id=command,path={_opt(files.command_socket)},server=on,wait=off",
            "-serial", "chardev:command",
            "-chardev", f"socket,id=control,path={_opt(files.control_socket)},server=on,wait=off",
            "-mon", "chardev=control,mode=control",
            "-qmp", f"unix:{_opt(files.qmp_socket)},server=on,wait=off"]
    if image is not None:
        argv += ["-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", KERNEL_APPEND]
    if balloon_id is not None:
        options = "".join(f",{_device_option(k, v)}" for k, v in (balloon_options or {}).items())
        argv += ["-device", "virtio-balloon-pci" + (f",id={balloon_id}" if balloon_id else "") + options]
    elif balloon_options:
        raise LaunchError("balloon_options need a balloon device (balloon_id is None)")
    if paused:
        argv.append("-S")
    argv += list(extra_args)
    return argv


def _device_option(name: str, value: str | int | bool) -> str:
    """``name=value`` for a -device option: booleans as on/off; names checked, values escaped (_opt)."""
    if not _QEMU_ID.fullmatch(name):
        raise LaunchError(f"invalid device property name {name!r}")
    text = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return f"{name}={_opt(text)}"


# --- the private control monitor -------------------------------------------------------------------------------

class _Control:
    """A minimal synchronous QMP client for the launcher's own monitor (greeting, negotiation, one command)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self._buf = b""
        try:
            self.sock.connect(str(path))
            self.greeting = self._message()
        except BaseException:
            self.sock.close()
            raise

    def _message(self) -> dict:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("QEMU closed its monitor")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str) -> dict:
        self.sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
        while True:
            msg = self._message()
            if "return" in msg or "error" in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


# --- resources: everything that must be released even when the LiveVM object is forgotten ---------------------

class _Resources:
    """The process and files of one VM.  Holds no reference to the LiveVM, so a finalizer can own it."""

    def __init__(self, proc: subprocess.Popen, files: VMFiles, own_workdir: bool) -> None:
        self.proc = proc
        self.files = files
        self.own_workdir = own_workdir
        self.channel = CommandChannel(files.command_socket, lambda: proc.poll() is None)
        self.serial_text: str | None = None  # the console, kept in memory once the files are gone

    def release(self, term_timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL; reap; remove the sockets (and the work directory if we made it)."""
        terminate(self.proc, term_timeout)
        self.channel.close()  # after QEMU is gone: a command still waiting in another thread has seen EOF
        if self.serial_text is None:
            self.serial_text = _read_text(self.files.serial_log)
        if self.own_workdir:
            shutil.rmtree(self.files.workdir, ignore_errors=True)
        else:
            for path in (self.files.qmp_socket, self.files.control_socket, self.files.command_socket):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _read_text(path: Path, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = _SERIAL_TAIL) -> str:
    kept = [line.rstrip("\r") for line in text.rstrip().splitlines()[-lines:]]
    return "\n".join("    " + line for line in kept) if kept else "    (empty)"


# --- the VM ------------------------------------------------------------------------------------------------------

class LiveVM:
    """A running ``qemu-system-x86_64`` with the tiny guest.  Create it with :meth:`LiveVM.start`.

    Attributes: ``qmp_socket`` (str), ``serial_log`` (Path), ``pid``, ``alive``, ``qemu_version`` (from the
    greeting, e.g. ``"7.2.22"``), ``boot_seconds`` (QEMU start to the guest's ready line, None until ready),
    ``guest_info`` (the ready line's fields: ``kernel``, ``driver``, ``device``, ``channel``), ``argv``.
    Also a context manager: ``with LiveVM.start() as vm: ...`` stops it on the way out.
    """

    def __init__(self, resources: _Resources, argv: list[str], guest: bool, started: float) -> None:
        self._res = resources
        self._finalizer = weakref.finalize(self, resources.release)
        self.argv = argv
        self.has_guest = guest
        self.qemu_version: str | None = None
        self.boot_seconds: float | None = None
        self.guest_info: dict[str, str] = {}
        self._started = started
        self._stop_lock = threading.Lock()

    # -- start ------------------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        memory: str | int = "512M",
        balloon_id: str | None = "balloon0",
        paused: bool = False,
        guest: bool = True,
        accel: str = "tcg",
        extra_args: Sequence[str] = (),
        image: GuestImage | None = None,
        workdir: Path | None = None,
        timeout: float = 90,
        *,
        qemu: str | Sequence[str] | None = None,
        balloon_options: Mapping[str, str | int | bool] | None = None,
    ) -> "LiveVM":
        """Boot QEMU and return once its QMP socket accepts and (guest, not paused) the guest is ready.

        ``balloon_id=""`` adds the device without an id (QOM path ``/machine/peripheral-anon/device[0]``);
        ``balloon_id=None`` adds none (``query-balloon`` then says DeviceNotActive).  ``guest=False`` boots no
        kernel: QEMU answers QMP, nothing ever reports.  ``paused=True`` starts with ``-S`` (``cont`` over QMP,
        then :meth:`wait_ready`).  ``image`` defaults to :func:`~balloonlab.live.guest_image.ensure_image`
        (built on first use).  ``workdir``: where the sockets and logs go (default: a fresh private directory,
        removed by :meth:`stop`).  ``qemu``: the binary, a wrapper command ending in one, or ``"debian13"`` for
        Debian 13's QEMU 10.0 built by ``balloonlab guest qemu`` (see :mod:`balloonlab.live.debian_qemu`).
        ``balloon_options``: more properties of the balloon device (``{"free-page-reporting": True}``).
        ``accel="kvm"`` is allowed but not the default (the guest hangs on the machines balloonlab is developed
        on).  Raises :class:`~balloonlab.errors.LaunchError` quoting QEMU's stderr or the guest console when
        QEMU fails or the guest is not ready within ``timeout`` seconds.
        """
        qemu_cmd, qemu_args, env = _qemu_command(qemu)
        extra_args = [*qemu_args, *extra_args]
        if guest and image is None:
            from .guest_image import ensure_image

            image = ensure_image()
        memory_mib(memory)  # a bad size fails here, before anything exists to clean up
        files, own = _make_workdir(workdir)
        argv = build_argv(files, memory=memory, balloon_id=balloon_id, paused=paused,
                          image=image if guest else None, accel=accel, extra_args=extra_args, qemu=qemu_cmd,
                          balloon_options=balloon_options)
        started = time.monotonic()
        try:
            with open(files.stderr_log, "wb") as stderr:
                proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                             start_new_session=True)  # Ctrl-C in a terminal is ours to handle, not QEMU's
        except BaseException as exc:
            if own:
                shutil.rmtree(files.workdir, ignore_errors=True)
            if isinstance(exc, OSError):
                raise LaunchError(f"cannot start {qemu_cmd[0]} (work directory {files.workdir}): {exc}") from exc
            raise
        vm = cls(_Resources(proc, files, own), argv, guest, started)
        try:
            vm._wait_monitor(started + timeout)
            if guest and not paused:
                vm.wait_ready(max(0.0, started + timeout - time.monotonic()))
        except BaseException:
            vm.stop(timeout=2)
            raise
        return vm

    def _wait_monitor(self, deadline: float) -> None:
        """Poll the private monitor until QEMU's main loop greets us (the QMP socket is then listening too)."""
        path = self._res.files.control_socket
        while True:
            self._check_running("before its QMP socket was ready")
            if path.exists():
                try:
                    control = _Control(path, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                except (OSError, ValueError):
                    pass
                else:
                    version = control.greeting.get("QMP", {}).get("version", {}).get("qemu", {})
                    control.close()
                    if version:
                        self.qemu_version = f"{version.get('major')}.{version.get('minor')}.{version.get('micro')}"
                    if Path(self.qmp_socket).exists():
                        return
            if time.monotonic() > deadline:
                raise LaunchError(f"QEMU's QMP socket did not come up in time.\n{self._diagnostics()}")
            time.sleep(0.02)

    def _check_running(self, when: str) -> None:
        code = self._res.proc.poll()
        if code is not None:
            raise LaunchError(f"QEMU exited with status {code} {when}.\n{self._diagnostics()}")

    def _diagnostics(self) -> str:
        files = self._res.files
        return (f"command: {' '.join(self.argv)}\nQEMU stderr ({files.stderr_log}):\n"
                f"{_tail(_read_text(files.stderr_log))}\nguest console ({files.serial_log}):\n"
                f"{_tail(self.console_output())}")

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def qmp_socket(self) -> str:
        return str(self._res.files.qmp_socket)

    @property
    def serial_log(self) -> Path:
        return self._res.files.serial_log

    @property
    def workdir(self) -> Path:
        return self._res.files.workdir

    @property
    def pid(self) -> int:
        return self._res.proc.pid

    def rss(self) -> int:
        """The QEMU process's resident memory in bytes (``VmRSS`` in ``/proc/PID/status``)."""
        return process_rss(self.pid)

    @property
    def alive(self) -> bool:
        return self._res.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._res.proc.poll()

    def exit_description(self) -> str | None:
        """How this QEMU ended, in words (None while it runs): "killed by SIGKILL", "exited with status 1"."""
        code = self.returncode
        if code is None:
            return None
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        elif code == 0:
            how = "exited (status 0: a QMP quit, or the guest powered off)"
        else:
            how = f"exited with status {code}"
        return f"the QEMU this lab started (pid {self.pid}) {how}"

    def console_output(self) -> str:
        """What the guest printed on its console (ttyS0); still available after :meth:`stop`."""
        if self._res.serial_text is not None:
            return self._res.serial_text
        return _read_text(self.serial_log)

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait for the guest's ready line (drivers loaded, command channel open), e.g. after ``cont``."""
        if not self.has_guest:
            raise LaunchError("this VM was started with guest=False: there is no guest to wait for")
        if self.boot_seconds is not None:
            return
        deadline = time.monotonic() + timeout
        pattern = re.compile(re.escape(READY_MARKER) + r"([^\r\n]*)\r?\n")
        while True:
            m = pattern.search(self.console_output())
            if m:
                self.boot_seconds = time.monotonic() - self._started
                self.guest_info = dict(
                    kv.split("=", 1) for kv in m.group(1).split() if "=" in kv
                )
                return
            self._check_running("before the guest was ready")
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"the guest did not print its ready line within {timeout:.0f} s "
                    f"(TCG boots take a few seconds; a loaded machine takes longer).\n{self._diagnostics()}"
                )
            time.sleep(0.05)

    # -- guest commands ---------------------------------------------------------------------------------------

    def exec(self, command: str, timeout: float = 30, check: bool = True) -> str:
        """Run ``command`` with the guest's ``sh`` (in its tmpfs, stdin /dev/null); return stdout+stderr.

        ``check=True`` raises :class:`~balloonlab.errors.GuestExecError` when the exit status is not 0
        (the error carries ``exit_code`` and ``output``); see :meth:`run` for the status without raising.
        """
        result = self.run(command, timeout)
        if check and result.exit_code != 0:
            raise GuestExecError(
                f"guest command {command!r} exited with status {result.exit_code}:\n{result.output.rstrip()}",
                exit_code=result.exit_code, output=result.output,
            )
        return result.output

    def run(self, command: str, timeout: float = 30) -> ExecResult:
        """Run ``command`` in the guest and return its output and exit status.

        A command that outlives ``timeout`` raises GuestExecError and keeps running in the guest; later
        commands wait for it there, and its late output is discarded.
        """
        if not self.has_guest:
            raise GuestExecError("this VM was started with guest=False: there is no guest to run commands in")
        deadline = time.monotonic() + timeout
        try:
            self.wait_ready(timeout)
        except LaunchError as exc:
            raise GuestExecError(f"the guest is not ready, cannot run {command!r}: {exc}") from None
        if self.guest_info.get("channel") == "none":
            raise GuestExecError("the guest has no command channel (second serial port)")
        return self._res.channel.run(command, max(0.0, deadline - time.monotonic()))

    # -- stop -------------------------------------------------------------------------------------------------

    def stop(self, timeout: float = 10) -> None:
        """QMP ``quit`` on the private monitor, then SIGTERM, then SIGKILL; reap; remove sockets and workdir.

        Safe to call more than once and after QEMU died by itself.
        """
        with self._stop_lock:
            if not self._finalizer.alive:
                return
            deadline = time.monotonic() + timeout
            if self.alive:
                with contextlib.suppress(OSError, ValueError):
                    control = _Control(self._res.files.control_socket, timeout=min(2.0, timeout))
                    try:
                        control.execute("qmp_capabilities")
                        control.execute("quit")
                    finally:
                        control.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._res.proc.wait(max(0.1, min(5.0, deadline - time.monotonic())))
            self._res.release(term_timeout=max(0.1, deadline - time.monotonic()))
            self._finalizer.detach()

    def __enter__(self) -> "LiveVM":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited ({self.returncode})"
        return f"<LiveVM pid={self.pid} {state} qmp={self.qmp_socket}>"


def _qemu_command(qemu: str | Sequence[str] | None) -> tuple[list[str], list[str], dict[str, str] | None]:
    """(argv prefix, extra options, environment) for the ``qemu`` argument of :meth:`LiveVM.start`."""
    if qemu in ("debian13",):
        from .debian_qemu import resolve

        tree = resolve(qemu)
        return tree.command(), tree.args(), {**os.environ, **tree.env()}
    command = [qemu] if isinstance(qemu, str) else list(qemu or (QEMU_BINARY,))
    if shutil.which(command[0]) is None:
        raise LaunchError(f"{command[0]} not found: install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86)")
    return command, [], None


def _make_workdir(workdir: Path | None) -> tuple[VMFiles, bool]:
    if workdir is None:
        base = tempfile.gettempdir()
        if len(base) > _MAX_SOCKET_PATH - 40:  # a long $TMPDIR would not fit a socket path
            base = "/tmp"
        files, own = VMFiles(Path(tempfile.mkdtemp(prefix="balloonlab-vm-", dir=base))), True
    else:
        path = Path(workdir)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"cannot create the work directory {path}: {exc.strerror}") from exc
        files, own = VMFiles(path.resolve()), False
        leftovers = [p.name for p in (files.qmp_socket, files.control_socket, files.command_socket) if p.exists()]
        if leftovers:
            raise LaunchError(f"{path} already holds {', '.join(leftovers)}: is another QEMU using it?")
    longest = max(len(str(p)) for p in files.all())
    if longest > _MAX_SOCKET_PATH:
        if own:
            shutil.rmtree(files.workdir, ignore_errors=True)
        raise LaunchError(f"work directory {files.workdir} is too long for a unix socket path (max ~60 chars)")
    return files, own
