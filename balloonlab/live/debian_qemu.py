"""A second, newer QEMU for live labs: Debian 13's ``qemu-system-x86`` (QEMU 10.0) in a cached Debian tree.

Why: the host's QEMU (7.2 on Debian 12) reports 10 stats; QEMU >= 9.2 reports 16 and resets them on
``system_reset``.  Comparing both against the same guest needs a 10.0 binary, and Debian 13 ships one.

Building: ``debootstrap --variant=minbase --include=qemu-system-x86 trixie DIR`` (root only; about 1.5 minutes and
~360 MB; the packages come from the Debian mirror).  Running: no chroot and no root needed afterwards: the tree's
own dynamic loader runs its ``qemu-system-x86_64`` with the tree's libraries (``ld.so --library-path``), ``-L``
points QEMU at the tree's firmware and ``QEMU_MODULE_DIR`` at its modules, so every path on the command line
(kernel, sockets) stays a host path.

``LiveVM.start(qemu="debian13")`` uses it; ``balloonlab guest qemu`` builds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestImageError, LaunchError
from .guest_image import default_cache_dir, file_lock

RELEASES = {"debian13": "trixie"}
MIRROR = "http://deb.debian.org/debian"
_LIBDIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
_LOADER = "lib64/ld-linux-x86-64.so.2"


@dataclass(frozen=True)
class QemuTree:
    """A Debian tree holding a QEMU, and how to run that QEMU from the host."""

    root: Path
    release: str
    version: str  #: e.g. "10.0.13"
    package: str  #: e.g. "Debian 1:10.0.13+ds-0+deb13u1"

    def command(self) -> list[str]:
        """argv prefix that runs the tree's qemu-system-x86_64 with the tree's libraries."""
        libs = ":".join(str(self.root / d) for d in _LIBDIRS)
        return [str(self.root / _LOADER), "--library-path", libs, str(self.root / "usr/bin/qemu-system-x86_64")]

    def args(self) -> list[str]:
        """Options that make it find its own firmware (SeaBIOS, option ROMs) rather than the host's."""
        return ["-L", str(self.root / "usr/share/qemu"), "-L", str(self.root / "usr/share/seabios")]

    def env(self) -> dict[str, str]:
        return {"QEMU_MODULE_DIR": str(self.root / "usr/lib/x86_64-linux-gnu/qemu")}


def _tree_dir(release: str, cache_dir: Path | None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"qemu-{release}"


def find_debian_qemu(name: str = "debian13", cache_dir: Path | None = None) -> QemuTree | None:
    """The built tree for ``name`` (``"debian13"``), or None when it was never built."""
    release = RELEASES.get(name, name)
    base = _tree_dir(release, cache_dir)
    try:
        meta = json.loads((base / "tree.json").read_text())
    except (OSError, ValueError):
        return None
    tree = QemuTree(base / "root", release, meta["version"], meta.get("package", ""))
    return tree if Path(tree.command()[-1]).is_file() else None


def ensure_debian_qemu(name: str = "debian13", cache_dir: Path | None = None, log=None) -> QemuTree:
    """The cached tree, built with debootstrap first if needed (root only).  Raises GuestImageError."""
    tree = find_debian_qemu(name, cache_dir)
    if tree is not None:
        return tree
    release = RELEASES.get(name, name)
    say = log or (lambda line: None)
    if shutil.which("debootstrap") is None:
        raise GuestImageError("debootstrap not found: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise GuestImageError(f"building the Debian {release} QEMU tree needs root (debootstrap); run as root: "
                              "balloonlab guest qemu")
    base = _tree_dir(release, cache_dir)
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / "build.lock"):
        tree = find_debian_qemu(name, cache_dir)
        if tree is not None:
            return tree
        staging = base / "root.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        say(f"debootstrap --variant=minbase --include=qemu-system-x86 {release} (takes a minute or two)")
        started = time.monotonic()
        out = subprocess.run(["debootstrap", "--variant=minbase", "--include=qemu-system-x86", release,
                              str(staging), MIRROR], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-3:])
            raise GuestImageError(f"debootstrap {release} failed (no network to the Debian mirror?): {tail}")
        shutil.rmtree(base / "root", ignore_errors=True)
        os.replace(staging, base / "root")
        probe = QemuTree(base / "root", release, "", "")
        version, package = _version(probe)
        (base / "tree.json").write_text(json.dumps({
            "release": release, "version": version, "package": package,
            "debootstrap_seconds": round(time.monotonic() - started, 1),
        }, indent=2) + "\n")
    tree = find_debian_qemu(name, cache_dir)
    assert tree is not None
    return tree


def _version(tree: QemuTree) -> tuple[str, str]:
    out = subprocess.run([*tree.command(), "--version"], capture_output=True, text=True,
                         env={**os.environ, **tree.env()})
    m = re.search(r"version (\S+)(?: \(([^)]*)\))?", out.stdout)
    if out.returncode != 0 or not m:
        raise GuestImageError(f"the QEMU in {tree.root} does not run: {out.stderr.strip()[-300:]}")
    return m.group(1), m.group(2) or ""


def resolve(qemu: str) -> QemuTree:
    """The tree for a ``LiveVM.start(qemu=...)`` name, or a LaunchError saying how to build it."""
    tree = find_debian_qemu(qemu)
    if tree is None:
        raise LaunchError(f"no {qemu} QEMU built yet: run 'balloonlab guest qemu' as root once "
                          "(debootstrap of Debian 13 with qemu-system-x86; a minute or two, ~360 MB)")
    return tree
