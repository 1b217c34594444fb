"""The tiny guest image: built once, cached by recipe, and holding what the guest's /init needs.

The archive is read back with the system ``cpio`` tool (not with our own writer's logic), and a cached image is
proven to be reused by calling ``ensure_image`` again with no ``apt-cache``/``apt-get`` on PATH: any attempt to
rebuild would fail loudly.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from balloonlab.errors import GuestImageError
from balloonlab.cli import guest as guest_cli
from balloonlab.live import guest_image as gi
from tests.fixtures.requirements import require


@pytest.fixture(scope="module")
def image() -> gi.GuestImage:
    require("guest-image")
    return gi.ensure_image()


def cpio_listing(archive: bytes, tmp_path: Path) -> dict[str, str]:
    """``cpio -itv`` of an archive: {path: the listing line} (needs the cpio tool)."""
    require("cpio")
    out = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True, check=True).stdout
    entries = {}
    for line in out.decode().splitlines():
        name = line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
        entries[name] = line
    return entries


def cpio_extract(archive: bytes, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=archive, cwd=dest, check=True,
                   capture_output=True)


def test_image_is_cached_and_reused_without_apt(image, tmp_path, monkeypatch) -> None:
    meta = image.directory / "image.json"
    before = (meta.stat().st_mtime_ns, image.kernel.stat().st_mtime_ns, image.initrd.stat().st_mtime_ns)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # no apt-cache, apt-get or dpkg-deb: a rebuild could not run
    again = gi.ensure_image()
    assert again == image
    assert (meta.stat().st_mtime_ns, again.kernel.stat().st_mtime_ns, again.initrd.stat().st_mtime_ns) == before
    assert image.directory.parent == gi.default_cache_dir()
    assert image.directory.name == f"guest-{gi.recipe_key()}"


def test_default_image_is_the_debian_cloud_kernel_with_the_virtio_modules(image, tmp_path) -> None:
    assert image.source.startswith("debian:linux-image-") and "cloud-amd64" in image.source
    assert image.kernel_version.endswith("-cloud-amd64")
    assert image.kernel.read_bytes()[0x202:0x206] == b"HdrS"  # the x86 boot protocol header of a bzImage
    assert image.modules == gi.VIRTIO_MODULES  # all six are modules in the Debian 6.1 cloud kernel

    archive = gzip.decompress(image.initrd.read_bytes())
    listing = cpio_listing(archive, tmp_path)
    for path in ("init", "bin/busybox", "bin/sh", "dev/console", "tmp", "proc", "sys", "dev"):
        assert path in listing, path
    assert listing["dev/console"].startswith("c")  # a character device node
    for name in gi.VIRTIO_MODULES:
        assert f"lib/modules/balloonlab/{name}.ko" in listing

    root = tmp_path / "root"
    cpio_extract(archive, root)
    init = (root / "init").read_text()
    assert os.access(root / "init", os.X_OK)
    assert "for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon;" \
        in init
    assert "%%" not in init  # every placeholder filled in
    assert gi.READY_MARKER in init and f"mount -t tmpfs -o mode=1777 tmpfs {gi.WORKLOAD_DIR}" in init
    assert (root / "bin/busybox").read_bytes() == gi.find_busybox().read_bytes()
    assert os.readlink(root / "bin/sh") == "busybox"
    for name in gi.VIRTIO_MODULES:  # uncompressed ELF relocatable objects: insmod takes them as they are
        data = (root / f"lib/modules/balloonlab/{name}.ko").read_bytes()
        assert data[:4] == b"\x7fELF" and data[16] == 1  # ET_REL


def test_a_local_kernel_builds_its_own_image(image, tmp_path) -> None:
    """``kernel=PATH`` (here: a copy without modules next to it, like a kernel with virtio built in)."""
    kernel = tmp_path / "vmlinuz-9.9.9-test"
    shutil.copyfile(image.kernel, kernel)
    built = gi.ensure_image(cache_dir=tmp_path / "cache", kernel=kernel)
    assert built.directory.parent == tmp_path / "cache"
    assert built.directory.name == f"guest-{gi.recipe_key(kernel)}" != f"guest-{gi.recipe_key()}"
    assert built.kernel_version == "9.9.9-test" and built.modules == () and built.source == str(kernel)
    assert built.kernel.read_bytes() == kernel.read_bytes()
    listing = cpio_listing(gzip.decompress(built.initrd.read_bytes()), tmp_path)
    assert "init" in listing and not any(p.endswith(".ko") for p in listing)

    os.utime(kernel, ns=(0, 1))  # a replaced kernel file is a new recipe: a new image replaces the old one
    rebuilt = gi.ensure_image(cache_dir=tmp_path / "cache", kernel=kernel)
    assert rebuilt.directory != built.directory
    # the old image is gone; lock files stay (unlinking one could let two builders hold "the" lock)
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [rebuilt.directory.name]
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.lock")) == sorted(
        [built.directory.name + ".lock", rebuilt.directory.name + ".lock"])


def test_recipe_key_follows_the_init_template(monkeypatch) -> None:
    key = gi.recipe_key()
    monkeypatch.setattr(gi, "VIRTIO_MODULES", gi.VIRTIO_MODULES[:-1])
    assert gi.recipe_key() != key


def test_unusable_kernels_are_clear_errors_and_leave_nothing(tmp_path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(GuestImageError, match="not readable"):
        gi.ensure_image(cache_dir=cache, kernel=tmp_path / "vmlinuz-nope")
    not_a_file = tmp_path / "vmlinuz-dir"
    not_a_file.mkdir()
    with pytest.raises(GuestImageError, match="cannot read the kernel"):
        gi.ensure_image(cache_dir=cache, kernel=not_a_file)
    assert [p.suffix for p in cache.iterdir()] == [".lock"]  # no half-built image, no staging directory


def test_newc_archive_round_trips_through_cpio(tmp_path) -> None:
    entries = [
        gi.CpioEntry("d", 0o040755),
        gi.CpioEntry("d/f", 0o100644, b"hello\n"),
        gi.CpioEntry("d/odd", 0o100600, b"abc"),  # length not a multiple of 4: padding must be right
        gi.CpioEntry("l", 0o120777, b"d/f"),
        gi.CpioEntry("null", 0o020666, rdev=(1, 3)),
    ]
    archive = gi.newc_archive(entries)
    assert archive.startswith(b"070701") and b"TRAILER!!!" in archive
    listing = cpio_listing(archive, tmp_path)
    assert set(listing) == {"d", "d/f", "d/odd", "l", "null"}
    assert listing["null"].startswith("crw-rw-rw-") and "1," in listing["null"]
    root = tmp_path / "x"
    cpio_extract(gi.newc_archive([e for e in entries if e.path != "null"]), root)  # mknod needs root: skip it
    assert (root / "d/f").read_bytes() == b"hello\n" and (root / "d/odd").read_bytes() == b"abc"
    assert os.readlink(root / "l") == "d/f"


def test_busybox_must_be_static() -> None:
    assert gi._is_static_elf(gi.find_busybox())
    dynamic = Path(shutil.which("ls") or "/bin/ls").resolve()
    assert not gi._is_static_elf(dynamic)


def test_guest_build_command(image, tmp_path, capsys) -> None:
    assert guest_cli.main(["build"]) == 0
    out = capsys.readouterr().out
    assert f"kernel:  {image.kernel}" in out and f"initrd:  {image.initrd}" in out
    assert guest_cli.main(["path"]) == 0
    assert str(image.kernel) in capsys.readouterr().out
    assert guest_cli.main(["path", "--cache-dir", str(tmp_path)]) == 1
    assert "run: balloonlab guest build" in capsys.readouterr().err
    assert guest_cli.main(["build", "--kernel", str(tmp_path / "nope")]) == 1
    assert "not readable" in capsys.readouterr().err


def test_compressed_and_builtin_modules(tmp_path) -> None:
    """Newer kernels (Debian 13) ship .ko.xz modules and build some virtio drivers in."""
    import lzma

    moddir = tmp_path / "6.12.0-test"
    drivers = moddir / "kernel/drivers/virtio"
    drivers.mkdir(parents=True)
    (drivers / "virtio_balloon.ko.xz").write_bytes(lzma.compress(b"\x7fELF balloon"))
    (drivers / "virtio_ring.ko").write_bytes(b"\x7fELF ring")
    (moddir / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n")
    assert gi.collect_modules(moddir) == [("virtio_ring", b"\x7fELF ring"), ("virtio_balloon", b"\x7fELF balloon")]

    (drivers / "virtio_balloon.ko.xz").unlink()
    with pytest.raises(GuestImageError, match="no virtio_balloon driver"):
        gi.collect_modules(moddir)
    (moddir / "modules.builtin").write_text("kernel/drivers/virtio/virtio_balloon.ko\n")
    assert gi.collect_modules(moddir) == [("virtio_ring", b"\x7fELF ring")]


def _fake_image(cache: Path, name: str, origin: str) -> Path:
    directory = cache / name
    directory.mkdir(parents=True)
    (directory / "image.json").write_text(json.dumps({"kernel_origin": origin}))
    return directory


def test_prune_skips_images_another_process_holds_and_keeps_lock_files(tmp_path) -> None:
    keep = _fake_image(tmp_path, "guest-new", "debian")
    stale = _fake_image(tmp_path, "guest-old1", "debian")
    busy = _fake_image(tmp_path, "guest-old2", "debian")
    staging = _fake_image(tmp_path, "guest-old3.tmp", "debian")  # a build under way, under guest-old3.lock
    other_kernel = _fake_image(tmp_path, "guest-local", "/boot/vmlinuz")
    (tmp_path / "guest-old1.lock").touch()
    # Another builder holds guest-old2's and guest-old3's locks, in a real second process.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys\n"
         "locks = [open(p, 'a') for p in sys.argv[1:]]\n"
         "for f in locks: fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('held', flush=True); sys.stdin.read()",
         str(tmp_path / "guest-old2.lock"), str(tmp_path / "guest-old3.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        gi._prune(tmp_path, keep=keep, origin="debian")
        assert not stale.exists()
        assert busy.is_dir() and staging.is_dir()  # busy: skipped, the holder's files untouched
        assert keep.is_dir() and other_kernel.is_dir()
        # lock files are never unlinked: a waiter on the old inode and a newcomer would both "hold" the lock
        assert (tmp_path / "guest-old1.lock").exists() and (tmp_path / "guest-old2.lock").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    gi._prune(tmp_path, keep=keep, origin="debian")  # released: now it goes
    assert not busy.exists() and not staging.exists() and keep.is_dir()


def test_file_lock_without_waiting_reports_a_busy_lock(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    with gi.file_lock(lock) as held:
        assert held
        with gi.file_lock(lock, wait=False) as second:  # flock: a second open file is a second owner
            assert second is False
    with gi.file_lock(lock, wait=False) as again:
        assert again is True
