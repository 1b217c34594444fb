"""``balloonlab host``: a host of emulated VMs sharing its memory, each VM a QEMU on its own QMP socket.

    balloonlab host --vms 4 -m 3G --vm-memory 1G [--free-page-reporting] [--deflate-on-oom] [--clock virtual]

Prints one socket per VM, serves until SIGINT or SIGTERM, or until a client sends ``quit`` to any VM (then it says
which VM and stops the others).  The library side is :mod:`balloonlab.emulator.host`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Callable, Sequence

from ..emulator.config import CLOCKS, machine_config
from ..errors import BalloonError, EmulatorOptionError
from ..units import format_size, parse_guest_size, parse_size


def _ram(what: str) -> Callable[[str], int]:
    """RAM as ``balloonlab emulate -m`` reads it (qemu-system's ``-m``: a bare number is MiB), refused below
    what a guest can keep, in the words ``emulate_host()`` uses for the same value."""
    def parse(text: str) -> int:
        try:
            return parse_guest_size(text, what, default_unit="M")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _swap(text: str) -> int:
    """Swap may be 0 (none), as ``emulate_host(swap=0)``; a bare number is MiB, like the RAM options."""
    try:
        return parse_size(text, default_unit="M")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balloonlab host",
        description="Run a host of emulated VMs that share its memory; each VM is an emulated QEMU with a "
                    "virtio-balloon device on its own QMP socket. Stops on Ctrl-C, SIGTERM, or 'quit' to any VM.")
    parser.add_argument("--vms", type=int, default=4, help="how many VMs (default 4)")
    parser.add_argument("-m", "--memory", type=_ram("host memory"), default="3G", help="the host's RAM (default 3G)")
    parser.add_argument("--vm-memory", type=_ram("VM memory"), default="1G", help="each VM's RAM (default 1G)")
    parser.add_argument("--swap", type=_swap, default=None,
                        help="the host's swap, 0 for none (default half its RAM)")
    parser.add_argument("--free-page-reporting", action="store_true",
                        help="-device virtio-balloon-pci,free-page-reporting=on on every VM")
    parser.add_argument("--deflate-on-oom", action="store_true",
                        help="-device virtio-balloon-pci,deflate-on-oom=on on every VM")
    parser.add_argument("--clock", choices=CLOCKS, default="real",
                        help="real (default), or virtual: time moves only with x-balloonlab-advance to any VM")
    parser.add_argument("--workloads", default=None,
                        help="idle, steady, diurnal, bursty, leak, batch, mixed, or recording:NAME_OR_PATH "
                             "(a real guest's recorded appetite; default idle)")
    parser.add_argument("--qemu-version", default="10.0", help="7.2, 9.2 or 10.0 (default 10.0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the workloads (default 0)")
    parser.add_argument("--socket-dir", default=None,
                        help="put the sockets here as vmN.sock (default: a private directory per VM)")
    return parser


async def run(args: argparse.Namespace) -> str:
    """Serve until a signal or a ``quit``; returns why it stopped.  Every socket is gone when this returns."""
    from ..emulator.host import EmulatedHost
    from ..client.replay import recorded_workload
    from ..emulator.workloads import assign

    names = [f"vm{i}" for i in range(args.vms)]
    try:
        plan = assign(args.workloads, names, args.seed, recorded_workload)
    except ValueError as exc:
        raise EmulatorOptionError(str(exc)) from None
    configs = [machine_config(guest="linux", ram=args.vm_memory, clock=args.clock, qemu_version=args.qemu_version,
                              id="balloon0", seed=args.seed * 1000 + i, boot_delay=None, workload=plan[name],
                              free_page_reporting=args.free_page_reporting, deflate_on_oom=args.deflate_on_oom)
               for i, name in enumerate(names)]
    host = EmulatedHost(args.memory, args.memory // 2 if args.swap is None else args.swap, args.clock)
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[str] = loop.create_future()

    def stop(why: str) -> None:
        if not stopped.done():
            stopped.set_result(why)

    host.on_vm_stopped = lambda name: stop(f"{name} received QMP 'quit'")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, signal.Signals(sig).name)
    try:
        for name, config in zip(names, configs):
            path = os.path.join(args.socket_dir, f"{name}.sock") if args.socket_dir else None
            await host.add_vm(name, config, path)
        print(f"host: {format_size(args.memory)} RAM, {len(names)} VMs of {format_size(args.vm_memory)}, "
              f"{args.clock} clock", flush=True)
        for name, emu in host.vms.items():
            print(f"{name} {emu.socket_path}", flush=True)
        return await stopped
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await host.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``balloonlab host ...``; 0 when stopped by a signal or a ``quit``, 1 for a bad option."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.vms < 1:
        parser.error(f"--vms: at least one VM, got {args.vms}")
    if args.socket_dir and not os.path.isdir(args.socket_dir):
        parser.error(f"--socket-dir: {args.socket_dir} is not a directory")
    try:
        why = asyncio.run(run(args))
    except BalloonError as exc:  # a workload or recording that does not exist, a VM that cannot start
        print(f"balloonlab host: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the handlers were in place: nothing was left behind
        return 130
    print(f"balloonlab host: {why}; every VM stopped", flush=True)
    return 0
