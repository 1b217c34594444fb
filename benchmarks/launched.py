"""``balloonlab.launch()`` to the first stats, against a bare QEMU boot of the same image to its ready marker.

Candidate: ``balloonlab.launch()`` (builds the command line, starts QEMU with its consoles and monitors, waits for
the guest's ready line, connects with qemu.qmp, discovers the balloon) until ``stats()`` holds a value, then
``close()`` (not timed).  Baseline: ``qemu-system-x86_64`` started directly with the minimal command line of
docs/qemu-behaviour.md, A (``-accel tcg -m 512 -nodefaults -display none -serial file:LOG -serial null -kernel
-initrd -append -device virtio-balloon-pci``) and the same cached kernel and initramfs, timed until the ready marker
is in the serial log, then killed.  The second serial port (``null``) gives the guest's init the UART it looks for
on ttyS1, as balloonlab's command channel does, so both boots run the same init path (without it the bare boot was
slower in a trial run, which flattered the ratio).  Runs alternate (candidate, baseline, in a shuffled order per
round); the figure is the ratio of the medians.  Goal <= 1.5.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from _common import Result, check, have_qemu, interleaved, median, wait_for


def _bare_boot(image) -> float:
    from balloonlab.live.guest_image import READY_MARKER
    from balloonlab.live.launcher import KERNEL_APPEND

    tmp = tempfile.mkdtemp(prefix="balloonlab-bench-")
    log = os.path.join(tmp, "serial.log")
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none",
            "-serial", f"file:{log}", "-serial", "null", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", KERNEL_APPEND, "-device", "virtio-balloon-pci,id=balloon0"]
    marker = READY_MARKER.encode()
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"bare QEMU exited with {proc.returncode}")
            try:
                with open(log, "rb") as fh:
                    return marker in fh.read()
            except FileNotFoundError:
                return False

        wait_for(ready, 120, "the guest's ready marker")
        return time.perf_counter() - t
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _launch(image) -> float:
    import balloonlab

    t = time.perf_counter()
    lab = balloonlab.launch(image=image)
    try:
        wait_for(lambda: lab.stats().get("free-memory") is not None, 30, "the first stats")
        return time.perf_counter() - t
    finally:
        lab.close()


def run(quick: bool = False) -> list[Result]:
    key = "first_stats_launched_vs_bare_boot"
    if not have_qemu():
        return [Result(key, None, "ratio", "<= 1.5", None, note="qemu-system-x86_64 not installed")]
    from balloonlab.errors import GuestImageError
    from balloonlab.live.guest_image import ensure_image

    try:
        image = ensure_image()
    except GuestImageError as exc:
        return [Result(key, None, "ratio", "<= 1.5", None, note=f"no guest image: {exc}")]
    got = interleaved({"launch": lambda: _launch(image), "bare": lambda: _bare_boot(image)}, 1 if quick else 6)
    launch, bare = median(got["launch"]), median(got["bare"])
    ratio = launch / bare
    return [Result(key, round(ratio, 3), "ratio", "<= 1.5", check(ratio, "<=", 1.5),
                   {"launch_s": round(launch, 2), "bare_boot_s": round(bare, 2),
                    "launch_samples_s": [round(x, 2) for x in got["launch"]],
                    "bare_samples_s": [round(x, 2) for x in got["bare"]], "kernel": image.kernel_version},
                   "TCG, 512 MiB, same kernel + initramfs")]
