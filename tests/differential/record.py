"""Record what a real QEMU answers to the recorded-answer tests' questions, so those tests compare the emulator
with QEMU's own words, not with the emulator's constants.

    python -m tests.differential.record debian13     # real QEMU 10.0 (balloonlab guest qemu) -> recorded/qemu-10.0.json

Two VMs: ``-S`` without a guest (greeting, query-version, unset guest-stats, the balloon size errors,
query-status), and one running the tiny Linux 6.1 guest (query-status; guest-stats right after system_reset).
``test_differential_recorded_10.py`` re-records the first part against the real QEMU when it is here, so a stale
file fails rather than lies.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .wire import RawQMP

RECORDED = Path(__file__).with_name("recorded")
DEVICE = "/machine/peripheral/balloon0"
STATS = {"execute": "qom-get", "arguments": {"path": DEVICE, "property": "guest-stats"}}


def _ask(conn: RawQMP, message: dict) -> Any:
    conn.send(message)
    return conn.reply()


def record_paused(qemu: str) -> dict[str, Any]:
    """The answers of a paused VM with the balloon and no guest."""
    from balloonlab.live.launcher import LiveVM

    vm = LiveVM.start(paused=True, guest=False, qemu=None if qemu == "host" else qemu)
    try:
        with RawQMP(vm.qmp_socket) as conn:
            answers = {"greeting": conn.greeting}
            _ask(conn, {"execute": "qmp_capabilities"})
            answers["query-version"] = _ask(conn, {"execute": "query-version"})
            answers["guest-stats"] = _ask(conn, STATS)
            answers["balloon 0"] = _ask(conn, {"execute": "balloon", "arguments": {"value": 0}})
            answers["balloon -1"] = _ask(conn, {"execute": "balloon", "arguments": {"value": -1}})
            answers["query-status"] = _ask(conn, {"execute": "query-status"})
        return answers
    finally:
        vm.stop()


def record_guest(qemu: str) -> dict[str, Any]:
    """A running Linux guest: query-status, and guest-stats right after system_reset (after its boot report)."""
    from balloonlab.live.launcher import LiveVM

    vm = LiveVM.start(qemu=None if qemu == "host" else qemu)
    try:
        with RawQMP(vm.qmp_socket) as conn:
            _ask(conn, {"execute": "qmp_capabilities"})
            answers = {"query-status": _ask(conn, {"execute": "query-status"})}
            deadline = time.monotonic() + 60
            while _ask(conn, STATS)["return"]["last-update"] == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            _ask(conn, {"execute": "system_reset"})
            answers["guest-stats after system_reset"] = _ask(conn, STATS)
        return answers
    finally:
        vm.stop()


def record(qemu: str) -> dict[str, Any]:
    from balloonlab.live.debian_qemu import find_debian_qemu

    tree = find_debian_qemu(qemu) if qemu != "host" else None
    return {"qemu": qemu, "package": tree.package if tree else None, "paused": record_paused(qemu),
            "linux-6.1-guest": record_guest(qemu)}


def main(argv: list[str]) -> int:
    qemu = argv[0] if argv else "debian13"
    answers = record(qemu)
    version = answers["paused"]["greeting"]["QMP"]["version"]["qemu"]
    path = RECORDED / f"qemu-{version['major']}.{version['minor']}.json"
    path.write_text(json.dumps(answers, indent=1) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
