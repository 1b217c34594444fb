"""``balloonlab emulate``: a qemu-system style command line -> MachineConfig + QMP socket, and the foreground runner.

The options are spelled as qemu-system spells them (so a command line from QEMU's docs or from a live lab runs
here unchanged); ``--option`` works for ``-option`` as in QEMU.  Anything the emulator does not model is refused
with one line naming the option, never silently ignored.

Documented choices:

* QMP is served on unix sockets only.  ``-qmp tcp:...`` is refused: a QMP monitor on TCP would hand the VM to
  anyone who can reach the port, and every balloonlab client speaks unix sockets.
* The emulator always listens: ``server=on`` may be left out (QEMU would then connect out to a listening
  client), ``server`` and ``nowait`` (QEMU's old spellings) are understood.
* ``wait=off`` is the default (QEMU's ``-qmp ...,server=on`` without ``wait`` waits for a client before the VM
  starts); ``wait=on`` is refused rather than half-emulated.
* ``-balloon virtio`` is accepted (QEMU 7.2 answers ``-balloon: invalid option``): it is the spelling of QEMU's
  stats document, and gives its anonymous device at ``/machine/peripheral-anon/device[1]``.
* ``-accel kvm`` (and ``-machine accel=kvm``, ``-enable-kvm``) are accepted and mean nothing: no CPU is emulated.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

from ..errors import EmulatorOptionError
from ..units import parse_guest_size
from ..emulator.config import CLOCKS, GUEST_MODELS, QEMU_VERSIONS, BalloonSpec, MachineConfig

T = TypeVar("T", bound=str)

USAGE = f"""usage: balloonlab emulate [-qmp unix:PATH[,server=on][,wait=off]] [-m SIZE] [-S] [-nodefaults]
                          [-device virtio-balloon-pci[,id=ID][,PROP=VALUE...]] [-balloon virtio]
                          [-display none] [-accel tcg|kvm] [-machine TYPE[,accel=tcg|kvm]]
                          [--guest MODEL] [--qemu-version VERSION] [--clock real|virtual] [--seed N]
                          [--guest-kernel VERSION] [--single-client]

Runs an emulated QEMU with a virtio-balloon device and serves QMP on a unix socket until a client sends
'quit' or the process gets SIGINT/SIGTERM.  Prints the socket path on stdout, and removes it at exit.

Unlike QEMU, the emulator serves several QMP clients on its socket at once (a notebook's lab, %%qmp and
qmp-shell can share one VM).  Real QEMU serves one client per socket: a second one connects but gets no
greeting until the first leaves.  --single-client behaves as QEMU does, to test a script before it meets a
real VM.

qemu-system options (same spelling as QEMU's):
  -qmp unix:PATH,server=on,wait=off   QMP socket (default: qmp.sock in a fresh private directory)
  -m SIZE                 RAM: 512 (MiB, as qemu-system's -m), 512M, 1G, size=512M (default 128M, as QEMU)
  -device virtio-balloon-pci[,id=ID][,deflate-on-oom=on|off][,free-page-reporting=on|off]
          [,free-page-hint=off][,page-poison=on|off][,guest-stats-polling-interval=SECONDS]
                          the balloon (without id: /machine/peripheral-anon/device[0]; free-page-hint=on needs
                          an iothread, which the emulator does not model: refused, as QEMU refuses it without one)
  -balloon virtio         legacy spelling: an anonymous balloon at /machine/peripheral-anon/device[1]
  -S                      start paused ('cont' over QMP starts the VM)
  -nodefaults, -display none, -accel tcg|kvm, -machine pc|q35[,accel=...]   accepted (nothing to configure)
balloonlab options:
  --guest MODEL           {', '.join(GUEST_MODELS)} (default linux)
  --qemu-version VERSION  {', '.join(QEMU_VERSIONS)}: which QEMU to answer as (default {QEMU_VERSIONS[-1]})
  --clock real|virtual    virtual: time only moves with the x-balloonlab-advance QMP command (default real)
  --seed N                seed of the guest's workload noise (default 0)
  --guest-kernel VERSION  kernel of the linux guest: 6.1 or 6.12 (default: the one seen with that QEMU)
  --single-client         serve one QMP client at a time, as QEMU does (default: every client at once)"""

_BOOL_WORDS = {"on": True, "yes": True, "true": True, "y": True, "off": False, "no": False, "false": False, "n": False}
_BALLOON_DRIVERS = {"virtio-balloon-pci": "virtio-balloon-pci", "virtio-balloon": "virtio-balloon-pci"}
_MACHINE_TYPES = ("pc", "q35")
_ACCELS = ("tcg", "kvm")
#: Options taking a value, and flags; values are the canonical (single-dash) names.
_WITH_VALUE = {"-qmp", "-m", "-device", "-balloon", "-display", "-accel", "-machine", "-M",
               "-guest", "-qemu-version", "-clock", "-seed", "-guest-kernel"}
_FLAGS = {"-S", "-nodefaults", "-enable-kvm", "-single-client"}


@dataclass
class EmulateOptions:
    """A parsed ``balloonlab emulate`` command line."""

    config: MachineConfig = field(default_factory=MachineConfig)
    socket_path: str | None = None  #: None: a fresh private directory


def _fail(option: str, message: str) -> EmulatorOptionError:
    return EmulatorOptionError(f"{option}: {message}")


def _split_opts(text: str) -> list[tuple[str, str | None]]:
    """QEMU's key=value,key=value (a doubled comma is a literal comma)."""
    parts, current, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                current += ","
                i += 2
                continue
            parts.append(current)
            current = ""
        else:
            current += text[i]
        i += 1
    parts.append(current)
    return [(p.split("=", 1)[0], p.split("=", 1)[1]) if "=" in p else (p, None) for p in parts]


def _onoff(option: str, key: str, value: str | None) -> bool:
    if value is None:
        return True
    try:
        return _BOOL_WORDS[value.lower()]
    except KeyError:
        raise _fail(option, f"Parameter '{key}' expects 'on' or 'off'") from None


def parse_qmp(spec: str) -> str:
    """The socket path of ``-qmp unix:PATH[,server=on][,wait=off]``."""
    option = f"-qmp {spec}"
    if spec.startswith("tcp:") or spec.startswith("telnet:"):
        raise _fail(option, "balloonlab emulate serves QMP on unix sockets only (a TCP monitor would give the VM "
                            "to anyone who reaches the port); use -qmp unix:PATH,server=on,wait=off")
    if not spec.startswith("unix:"):
        raise _fail(option, "only unix:PATH,server=on,wait=off is supported")
    parts = _split_opts(spec[len("unix:"):])
    path = parts[0][0] if parts[0][1] is None else f"{parts[0][0]}={parts[0][1]}"
    if not path:
        raise _fail(option, "missing socket path after 'unix:'")
    for key, value in parts[1:]:
        if key == "server":
            if not _onoff(option, key, value):
                raise _fail(option, "server=off would connect out to a client; balloonlab emulate only listens")
        elif key == "wait":
            if _onoff(option, key, value):
                raise _fail(option, "wait=on is not supported: the emulator serves at once (use wait=off)")
        elif key == "nowait" and value is None:
            pass
        else:
            raise _fail(option, f"unsupported socket option '{key}' (known: server, wait)")
    return path


def parse_memory(text: str) -> int:
    """``-m 512`` (MiB), ``-m 512M``, ``-m size=1G``."""
    option = f"-m {text}"
    parts = _split_opts(text)
    size = None
    for key, value in parts:
        if value is None and size is None and key:
            size = key
        elif key == "size" and value is not None:
            size = value
        else:
            raise _fail(option, f"unsupported memory option '{key}' (only the size is modelled)")
    if size is None:
        raise _fail(option, "missing size")
    try:
        return parse_guest_size(size, "memory", default_unit="M")  # qemu-system's -m: a bare number is MiB
    except ValueError as exc:
        raise _fail(option, str(exc)) from None


def parse_device(text: str) -> BalloonSpec:
    """``-device virtio-balloon-pci[,id=ID][,PROP=VALUE...]``."""
    option = f"-device {text}"
    parts = _split_opts(text)
    driver, first_value = parts[0]
    if first_value is not None:
        if driver != "driver":
            raise _fail(option, "expected a device type first (e.g. virtio-balloon-pci)")
        driver = first_value
    if driver not in _BALLOON_DRIVERS:
        raise _fail(option, f"balloonlab emulates only virtio-balloon-pci, not '{driver}'")
    spec = BalloonSpec(driver=_BALLOON_DRIVERS[driver])
    for key, value in parts[1:]:
        if key == "id":
            if not value:
                raise _fail(option, "id needs a value")
            spec.id = value
        elif key in ("deflate-on-oom", "free-page-reporting", "free-page-hint", "page-poison"):
            setattr(spec, key.replace("-", "_"), _onoff(option, key, value))
        elif key == "guest-stats-polling-interval":
            try:
                interval = int(value or "")
            except ValueError:
                raise _fail(option, f"Parameter '{key}' expects an integer") from None
            if interval < 0:
                raise _fail(option, "timer value must be greater than zero")
            if interval > 0xFFFFFFFF:
                raise _fail(option, "timer value is too big")
            spec.polling_interval = interval
        else:
            raise _fail(option, f"property '{key}' is not modelled by the emulator (known: id, deflate-on-oom, "
                                "free-page-reporting, free-page-hint, page-poison, guest-stats-polling-interval)")
    try:
        spec.check()
    except EmulatorOptionError as exc:
        raise _fail(option, str(exc)) from None
    return spec


def _accept_machine(text: str) -> None:
    option = f"-machine {text}"
    for i, (key, value) in enumerate(_split_opts(text)):
        if value is None and i == 0:
            key, value = "type", key
        if key == "type":
            if not (value in _MACHINE_TYPES or (value or "").startswith(("pc-i440fx-", "pc-q35-"))):
                raise _fail(option, f"machine type '{value}' is not emulated (use pc or q35)")
        elif key == "accel":
            if any(a not in _ACCELS for a in (value or "").split(":")):
                raise _fail(option, f"accelerator '{value}' is not known (tcg or kvm)")
        else:
            raise _fail(option, f"machine property '{key}' is not modelled")


def _choice(option: str, value: str, choices: Sequence[T]) -> T:
    for choice in choices:
        if value == choice:
            return choice
    raise _fail(option, f"'{value}' is not one of {', '.join(choices)}")


def parse_args(argv: Sequence[str]) -> EmulateOptions:
    """Parse ``balloonlab emulate`` arguments; raises EmulatorOptionError naming the offending option."""
    opts = EmulateOptions()
    config = opts.config
    args = list(argv)
    i = 0
    while i < len(args):
        raw = args[i]
        i += 1
        if not raw.startswith("-") or raw == "-":
            raise EmulatorOptionError(f"{raw}: unexpected argument (every option starts with '-')")
        name, inline = raw, None
        if raw.startswith("--"):
            name, _, inline = raw[1:].partition("=")
            inline = inline if "=" in raw else None
        if name not in _WITH_VALUE and name not in _FLAGS:
            raise EmulatorOptionError(f"{raw}: invalid option (see balloonlab emulate --help)")
        if name in _FLAGS:
            if inline is not None:
                raise _fail(raw, "takes no value")
            if name == "-S":
                config.start_paused = True
            elif name == "-nodefaults":
                config.nodefaults = True
            elif name == "-single-client":
                config.single_client = True
            continue
        if inline is None:
            if i >= len(args):
                raise EmulatorOptionError(f"{raw}: requires an argument")
            value = args[i]
            i += 1
        else:
            value = inline
        _apply(opts, name, value)
    return opts


def _apply(opts: EmulateOptions, name: str, value: str) -> None:
    config = opts.config
    if name == "-qmp":
        if opts.socket_path is not None:
            raise _fail(f"-qmp {value}", "only one QMP socket is supported")
        opts.socket_path = parse_qmp(value)
    elif name == "-m":
        config.ram_size = parse_memory(value)
    elif name in ("-device", "-balloon"):
        if name == "-device":
            spec = parse_device(value)
        elif value == "virtio":
            spec = BalloonSpec(legacy=True)
        else:
            raise _fail(f"-balloon {value}", "only '-balloon virtio' is understood")
        if config.balloons:
            raise _fail(f"{name} {value}", "Only one balloon device is supported")
        config.balloons.append(spec)
    elif name == "-display":
        if value != "none":
            raise _fail(f"-display {value}", "the emulator has no display (use -display none)")
    elif name == "-accel":
        accel = _split_opts(value)
        if accel[0][0] not in _ACCELS or accel[0][1] is not None or len(accel) > 1:
            raise _fail(f"-accel {value}", "only tcg or kvm (without properties) are accepted")
    elif name in ("-machine", "-M"):
        _accept_machine(value)
    elif name == "-guest":
        config.guest = _choice("--guest", value, GUEST_MODELS)
    elif name == "-qemu-version":
        config.qemu_version = _choice("--qemu-version", value, QEMU_VERSIONS)
    elif name == "-clock":
        config.clock = _choice("--clock", value, CLOCKS)
    elif name == "-guest-kernel":
        config.guest_kernel = value
    elif name == "-seed":
        try:
            config.seed = int(value)
        except ValueError:
            raise _fail(f"--seed {value}", "expects an integer") from None


async def run(opts: EmulateOptions) -> None:
    """Serve until ``quit`` or SIGINT/SIGTERM; the socket is gone when this returns."""
    from ..emulator.runner import Emulator  # the device model is only imported when an emulator really starts

    emulator = Emulator(opts.config, opts.socket_path)
    await emulator.start()
    loop = asyncio.get_running_loop()
    stop = lambda: loop.create_task(emulator.stop())  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        print(emulator.socket_path, flush=True)
        await emulator.wait_closed()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``balloonlab emulate ...``; returns the exit status (0: stopped by quit or a signal, 1: bad option)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "-help") for a in args):
        print(USAGE)
        return 0
    try:
        opts = parse_args(args)
        asyncio.run(run(opts))
    except EmulatorOptionError as exc:
        print(f"balloonlab emulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place: nothing was left behind
        return 130
    return 0
