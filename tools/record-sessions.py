#!/usr/bin/env python3
"""Record again the real-QEMU sessions balloonlab ships (balloonlab/recordings/*.blab.gz).

Each session boots real ``qemu-system-x86_64`` (TCG) with balloonlab's tiny Linux guest, polls stats every 2 s,
records the lab, and runs busybox workloads in the guest (``lab.guest_exec``); every step is a ``mark`` in the
recording.  The descriptions ``balloonlab.recordings()`` shows are in balloonlab/client/shipped.py.

    python tools/record-sessions.py                  # all of them, into balloonlab/recordings/
    python tools/record-sessions.py tmpfs-fill-7.2   # one
    python tools/record-sessions.py --out /tmp/rec   # somewhere else (to compare with the shipped ones)

Needs qemu-system-x86_64 (7.2 here), the guest image (``balloonlab guest build``) and, for the 10.0 session,
Debian 13's QEMU (``balloonlab guest qemu``).  Takes about 3 minutes per session.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import balloonlab
from balloonlab.client.balloon import Balloon
from balloonlab.client.recording import Recorder
from balloonlab.client.shipped import CATALOGUE, SUFFIX

REPO = Path(__file__).resolve().parent.parent
INTERVAL = 2
MIB = 1 << 20

Step = Callable[[Balloon, Recorder], None]


def wait(seconds: float) -> Step:
    def step(lab: Balloon, rec: Recorder) -> None:
        time.sleep(seconds)
    step.__doc__ = f"wait {seconds:g} s"
    return step


def shell(command: str, note: str) -> Step:
    def step(lab: Balloon, rec: Recorder) -> None:
        rec.mark(f"{note}: {command}")
        lab.guest_exec(command, timeout=180)
    return step


def target(size: str) -> Step:
    def step(lab: Balloon, rec: Recorder) -> None:
        rec.mark(f"balloon target {size}")
        lab.set_target(size)
    return step


FILL = "dd if=/dev/zero of=fill bs=1M count={mib} 2>&1 | tail -n 1"


@dataclass
class Session:
    name: str
    steps: list[Step]
    launch: dict[str, Any] = field(default_factory=dict)


def tmpfs_fill(name: str, reporting: bool) -> Session:
    return Session(name, [wait(20), shell(FILL.format(mib=200), "fill 200 MiB of tmpfs"), wait(50),
                          shell("rm fill", "remove the file"), wait(60)],
                   {"balloon_options": {"free-page-reporting": reporting}})


SESSIONS = {s.name: s for s in [
    tmpfs_fill("tmpfs-fill-7.2", False),
    tmpfs_fill("tmpfs-fill-fpr-7.2", True),
    Session("inflate-under-load-7.2", [
        wait(15), shell(FILL.format(mib=96), "a 96 MiB load in tmpfs"), wait(20), target("256M"), wait(40),
        target("512M"), wait(40), shell("rm fill", "the load goes away"), wait(30)]),
    Session("deflate-on-oom-7.2", [
        wait(15), target("160M"), wait(25), shell(FILL.format(mib=200), "fill 200 MiB of tmpfs past the balloon"),
        wait(40), shell("rm fill", "remove the file"), wait(40)],
        {"balloon_options": {"deflate-on-oom": True}}),
    Session("page-cache-10.0", [
        wait(15),
        shell("for i in 1 2 3 4; do dd if=/dev/zero of=f$i bs=1M count=40 2>/dev/null; cat f$i > /dev/null; "
              "sleep 5; done", "write and read 4 files of 40 MiB, one every 5 s"),
        wait(20), shell("sync; echo 3 > /proc/sys/vm/drop_caches", "drop_caches (tmpfs pages are not droppable)"),
        wait(30), shell("rm f1 f2 f3 f4", "remove the files: the cache goes with them"), wait(20),
        shell("echo 3 > /proc/sys/vm/drop_caches", "drop_caches again"), wait(20)],
        {"qemu": "debian13"}),
]}


def record(session: Session, out: Path) -> Path:
    path = out / (session.name + SUFFIX)
    partial = path.with_name(session.name + ".part" + SUFFIX)  # compressed like the final one
    print(f"{session.name}: booting QEMU...", file=sys.stderr, flush=True)
    with balloonlab.launch(memory="512M", **session.launch) as lab:
        lab.polling_interval = INTERVAL
        time.sleep(2 * INTERVAL)  # the first reports after the boot one
        rec = lab.record(partial, description=CATALOGUE[session.name])
        try:
            for step in session.steps:
                step(lab, rec)
        finally:
            rec.stop()
        if rec.state != "stopped":
            raise SystemExit(f"{session.name}: {rec.error}")
    partial.replace(path)
    print(f"{session.name}: {rec.reports} reports, {path.stat().st_size} bytes -> {path}", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"sessions to record (default: all): {', '.join(SESSIONS)}")
    parser.add_argument("--out", type=Path, default=REPO / "balloonlab" / "recordings")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(SESSIONS))
    if unknown:
        parser.error(f"unknown session {unknown[0]!r} (choose from {', '.join(SESSIONS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or SESSIONS:
        record(SESSIONS[name], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
