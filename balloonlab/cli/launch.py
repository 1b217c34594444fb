"""``balloonlab launch``: boot a live QEMU with the tiny guest, print its QMP socket, stop it on Ctrl-C.

The library side is :class:`balloonlab.live.launcher.LiveVM`; this module only parses arguments, handles signals
and prints.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from ..errors import BalloonError
from ..units import parse_guest_size
from ..live.launcher import LiveVM


class _Interrupted(BaseException):
    """A stop signal while ``balloonlab launch`` waits for QEMU and the guest (BaseException, like Ctrl-C's
    KeyboardInterrupt, so LiveVM.start's cleanup runs and nothing on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def main(argv: Sequence[str] | None = None) -> int:
    """``balloonlab launch [-m 512M] [--paused] [--accel tcg] [--no-guest] [--id ID] [--no-balloon]``."""
    parser = argparse.ArgumentParser(
        prog="balloonlab launch",
        description="Boot qemu-system-x86_64 (TCG) with balloonlab's tiny guest and a virtio-balloon device, "
                    "print its QMP socket, and keep it running until Ctrl-C or SIGTERM.",
    )
    parser.add_argument("-m", "--memory", default="512M",
                        help="guest RAM: 512M, 1G, or 512 (MiB, as qemu-system's -m) (default 512M)")
    parser.add_argument("--paused", "-S", action="store_true", help="start paused (-S); 'cont' over QMP to boot")
    parser.add_argument("--accel", default="tcg", help="tcg (default) or kvm where KVM works")
    parser.add_argument("--no-guest", action="store_true", help="no kernel: QEMU answers QMP, nothing reports")
    parser.add_argument("--id", default="balloon0",
                        help="balloon device id (default balloon0; '' for a device without id: peripheral-anon)")
    parser.add_argument("--no-balloon", action="store_true", help="no virtio-balloon device at all")
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the guest (default 90)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the sockets go (default: private tmp dir)")
    parser.add_argument("--qemu", default=None,
                        help="qemu-system-x86_64 binary, or 'debian13' (QEMU 10.0; build: balloonlab guest qemu)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    stop_requested = threading.Event()
    booting = True

    def on_signal(signum, frame):
        nonlocal booting
        stop_requested.set()
        if booting:  # interrupt the boot wait at once: LiveVM.start stops the QEMU it started, then re-raises
            booting = False  # once: a second Ctrl-C must not interrupt that cleanup
            raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    vm = None
    try:
        try:
            # qemu-system's -m: a bare number is MiB (the one exception to units.py's bytes rule)
            memory = parse_guest_size(args.memory, "memory", default_unit="M")
            vm = LiveVM.start(memory=memory, balloon_id=None if args.no_balloon else args.id, paused=args.paused,
                              guest=not args.no_guest, accel=args.accel, workdir=args.workdir, timeout=args.timeout,
                              qemu=args.qemu)
            booting = False
        except _Interrupted as stop:
            print(f"balloonlab launch: {signal.Signals(stop.signum).name} while starting: QEMU stopped",
                  file=sys.stderr)
            return 128 + stop.signum
        except Exception as exc:
            if not isinstance(exc, BalloonError):
                raise
            print(f"balloonlab launch: {exc}", file=sys.stderr)
            return 1
        if vm.boot_seconds is not None:
            info = vm.guest_info
            ready = (f"guest ready after {vm.boot_seconds:.1f} s (kernel {info.get('kernel', '?')}, "
                     f"balloon driver {'loaded' if info.get('driver') == 'yes' else 'NOT loaded'})")
        else:
            ready = "paused (-S): send 'cont' to boot the guest" if args.paused else "no guest"
        print(f"QEMU {vm.qemu_version} running, pid {vm.pid}; {ready}")
        print(f"QMP socket: {vm.qmp_socket}")
        print(f"  attach:   qmp-shell {vm.qmp_socket}")
        print(f"  python:   balloonlab.connect({vm.qmp_socket!r})")
        print(f"console:    {vm.serial_log}")
        print("Ctrl-C (or SIGTERM) stops QEMU.", flush=True)
        while not stop_requested.wait(0.5):
            if not vm.alive:
                print(f"QEMU exited by itself (status {vm.returncode}).")
                return 0 if vm.returncode == 0 else 1
        print("stopping QEMU ...", flush=True)
        return 0
    finally:
        if vm is not None:
            vm.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
