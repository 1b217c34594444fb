"""The ``balloonlab`` command: a thin dispatcher to the module that owns each subcommand.

    balloonlab emulate ...      an emulated QEMU serving QMP (qemu-system spelling; cli/emulate.py)
    balloonlab host ...         a host of emulated VMs sharing its memory, one QMP socket each (cli/host.py)
    balloonlab guest build|path|qemu   the tiny guest image, and Debian 13's QEMU (cli/guest.py)
    balloonlab launch ...       boot a live QEMU with it and print the QMP socket (cli/launch.py)
    balloonlab lab              open JupyterLab on the quickstart notebook (cli/jupyter.py)
    balloonlab record ...       record a VM's balloon to a file balloonlab.replay() plays (cli/record.py)
    balloonlab dashboard [URI]  serve the fleet of libvirt hosts as a web page through Voila (cli/dashboard.py)

Every ``main()`` and argument parser of the package lives in this folder; the library modules hold none.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

USAGE = """usage: balloonlab {emulate,host,guest,launch,lab,record,dashboard} ...

  emulate    run an emulated QEMU with a virtio-balloon device, serving QMP (qemu-system spelling)
  host       run a host of emulated VMs sharing its memory, each on its own QMP socket
  guest      the tiny Linux guest of live labs, and a second QEMU to compare with:
               guest build   build and cache the guest image (kernel + busybox initramfs)
               guest path    print where the cached image is, without building it
               guest qemu    build Debian 13's QEMU 10.0 for live labs (root)
  launch     boot qemu-system-x86_64 with the tiny guest and print its QMP socket
  lab        open JupyterLab on the quickstart notebook (emulated backend)
  record     record a VM's balloon from its QMP socket (SOCKET -o FILE --duration 10m [--interval 2])
  dashboard  serve the balloons of libvirt hosts' VMs (or an emulated host) as a web page (Voila)

'balloonlab COMMAND --help' describes each command."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    run: Callable[[Sequence[str] | None], int]
    if command == "emulate":
        from .emulate import main as run
    elif command == "host":
        from .host import main as run
    elif command == "guest":
        from .guest import main as run
    elif command == "launch":
        from .launch import main as run
    elif command == "lab":
        from .jupyter import main as run
    elif command == "record":
        from .record import main as run
    elif command == "dashboard":
        from .dashboard import main as run
    else:
        print(f"balloonlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)
