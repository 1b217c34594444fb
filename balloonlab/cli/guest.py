"""``balloonlab guest build|path|qemu``: the tiny guest image and Debian 13's QEMU, from the command line.

The library side is :mod:`balloonlab.live.guest_image` and :mod:`balloonlab.live.debian_qemu`; this module only
parses arguments and prints.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import GuestImageError
from ..live.debian_qemu import RELEASES, ensure_debian_qemu
from ..live.guest_image import default_cache_dir, ensure_image, find_image


def cli_say(line: str) -> None:
    """A progress or error line of ``balloonlab guest`` (also ``guest qemu``): on stderr, so stdout keeps only
    the result a script may read."""
    print(f"balloonlab guest: {line}", file=sys.stderr)


def guest_command(command: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a ``balloonlab guest ...`` entry point: a GuestImageError (a missing tool, a failed download) is told
    in one line on stderr with exit status 1, as a user wants it, instead of a traceback."""
    @functools.wraps(command)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return command(argv)
        except GuestImageError as exc:
            cli_say(str(exc))
            return 1
    return run


@guest_command
def main(argv: Sequence[str] | None = None) -> int:
    """``balloonlab guest build [--cache-dir D] [--kernel PATH] [--rebuild]``, ``guest path``, ``guest qemu``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["qemu"]:
        return qemu_main(args[1:])
    parser = argparse.ArgumentParser(prog="balloonlab guest", description="The tiny Linux guest of live labs.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("qemu", help="build Debian 13's QEMU 10.0 for live labs (root; 'guest qemu --help')")
    for name, text in (("build", "build the guest image (once; cached)"),
                       ("path", "print where the cached image is, without building it")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--cache-dir", type=Path, default=None, help="default: $XDG_CACHE_HOME/balloonlab")
        p.add_argument("--kernel", default=None, help="use this vmlinuz instead of the Debian cloud kernel")
        if name == "build":
            p.add_argument("--rebuild", action="store_true", help="build again (fetches the newest cloud kernel)")
    options = parser.parse_args(args)
    if options.action == "path":
        image = find_image(options.cache_dir, options.kernel)
        if image is None:
            cache = options.cache_dir or default_cache_dir()
            print(f"no guest image built yet in {cache} (run: balloonlab guest build)", file=sys.stderr)
            return 1
    else:
        started = time.monotonic()
        image = ensure_image(options.cache_dir, kernel=options.kernel, rebuild=options.rebuild, log=cli_say)
        print(f"guest image ready in {time.monotonic() - started:.1f} s")
    print(f"kernel:  {image.kernel}  ({image.kernel_version}, {image.source})")
    print(f"initrd:  {image.initrd}  (modules: {', '.join(image.modules) or 'none'})")
    return 0




@guest_command
def qemu_main(argv: Sequence[str] | None = None) -> int:
    """``balloonlab guest qemu [--release debian13] [--cache-dir D]``: build (once) and describe the tree."""
    parser = argparse.ArgumentParser(prog="balloonlab guest qemu",
                                     description="Build a Debian 13 tree with QEMU 10.0 for live labs (root).")
    parser.add_argument("--release", default="debian13", choices=sorted(RELEASES))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.monotonic()
    tree = ensure_debian_qemu(args.release, args.cache_dir, log=cli_say)
    print(f"QEMU {tree.version} ({tree.package}) ready in {time.monotonic() - started:.1f} s: {tree.root}")
    print(f"use it with: LiveVM.start(qemu={args.release!r}) or balloonlab.launch(qemu={args.release!r})")
    return 0
