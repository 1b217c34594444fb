#!/usr/bin/env python3
"""On-demand mutation run over the emulator's device model and its QMP server: named mutants, each a plausible
mistake, applied one at a time to a scratch copy of the checkout; a mutant is *killed* when the tests fail on it.

Why named mutants rather than a generic tool: the mistakes worth guarding against are the ones that make the
emulator answer unlike QEMU while still looking sane (a doubled polling period, stats wiped by interval 0, a
re-stamped event), and each one names the tests that are supposed to catch it, so a survivor says exactly which
promise is unguarded.  Not part of the CI run (it runs the tests once per mutant); its last result is recorded in
docs/testing.md.

    python tools/mutants.py                 # every mutant against the QEMU-free tests (a few minutes)
    python tools/mutants.py --killers       # every mutant against only the tests it names (quick)
    python tools/mutants.py --qemu          # also run the real-QEMU tests each mutant names (needs QEMU)
    python tools/mutants.py --only interval-0-wipes-stats --qemu --each   # each named test, one by one
    python tools/mutants.py --list

Exit status 0 when every mutant run was killed, 1 when one survived, 2 on a broken mutant (its text no longer
matches the source: update the mutant with the code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The QEMU-free tests every mutant runs against by default: the emulator's unit tests, the comparator, faults and
#: fuzzing (the ones that need no QEMU, browser or notebook kernel).
QEMU_FREE = ["tests/test_emulator_device.py", "tests/test_emulator_machine.py", "tests/test_emulator_clock.py",
             "tests/test_emulator_server.py", "tests/test_emulator_server_json.py", "tests/test_emulator_virtio.py",
             "tests/test_emulator_virtio_qmp.py", "tests/test_emulator_guests.py", "tests/test_emulate_cli.py",
             "tests/test_emulator_server_client.py", "tests/test_faults.py", "tests/test_fuzz_qmp.py"]


@dataclass(frozen=True)
class Mutant:
    """One mistake: ``old`` (exactly once in ``path``) becomes ``new``.  ``killers``: the tests meant to catch it
    (pytest node ids or files); ``qemu_killers``: the real-QEMU ones among them (run with --qemu)."""

    name: str
    path: str
    old: str
    new: str
    why: str
    killers: tuple[str, ...] = ()
    qemu_killers: tuple[str, ...] = field(default=())


DEVICE = "balloonlab/emulator/device.py"
EVENTS = "balloonlab/emulator/events.py"
MACHINE = "balloonlab/emulator/machine.py"
CONFIG = "balloonlab/emulator/config.py"
SERVER = "balloonlab/emulator/qmp_server.py"
GUEST_DIFF = "tests/test_differential_guest.py"

MUTANTS = [
    Mutant("interval-0-wipes-stats", DEVICE,
           "        if value == 0:\n            self._destroy_timer()\n            return",
           "        if value == 0:\n            self._destroy_timer()\n"
           "            self.stats = [UNSET] * self.n_known\n            self.last_update = 0\n            return",
           "QEMU keeps the last stats when polling is switched off",
           ("tests/test_emulator_device.py::test_zero_destroys_the_timer_and_keeps_the_stats",
            "tests/test_notebooks.py::test_notebook_runs[02-polling-contract]")),
    Mutant("doubled-period", DEVICE, "self.clock.vm_ns() + self.poll_interval * NS",
           "self.clock.vm_ns() + 2 * self.poll_interval * NS", "the polling period is the interval, not twice it",
           ("tests/test_emulator_device.py",),
           (f"{GUEST_DIFF}::test_report_times_follow_the_interval_and_its_countdown",)),
    Mutant("countdown-not-restarted", DEVICE,
           "        if self.poll_interval > 0:\n            self.poll_interval = value\n            self._rearm()\n",
           "        if self.poll_interval > 0:\n            self.poll_interval = value\n",
           "a new interval while polling restarts the countdown from the qom-set",
           ("tests/test_emulator_device.py::test_new_value_restarts_the_countdown",),
           (f"{GUEST_DIFF}::test_report_times_follow_the_interval_and_its_countdown",)),
    Mutant("no-poll-at-once", DEVICE, "self.timer.mod(self.clock.vm_ns())  # first request at once",
           "self.timer.mod(self.clock.vm_ns() + value * NS)", "off -> on sends the first request at once",
           ("tests/test_emulator_device.py",),
           (f"{GUEST_DIFF}::test_report_times_follow_the_interval_and_its_countdown",)),
    Mutant("same-value-restarts", DEVICE, "        if value == self.poll_interval:\n            return\n", "",
           "writing the current interval again is a no-op", ("tests/test_emulator_device.py",)),
    Mutant("negative-accepted", DEVICE, "if value < 0:", "if value < -1:",
           "QEMU refuses every negative interval", ("tests/test_emulator_device.py",)),
    Mutant("uint32-max-refused", DEVICE, "if value > UINT32_MAX:", "if value >= UINT32_MAX:",
           "4294967295 is the largest interval QEMU takes", ("tests/test_emulator_device.py",)),
    Mutant("no-rearm-without-buffer", DEVICE,
           "if not (self.guest_features & F_STATS_VQ and self.statsq.device_return()):\n            self._rearm()",
           "if not (self.guest_features & F_STATS_VQ and self.statsq.device_return()):\n            pass",
           "with no buffer to hand back QEMU re-arms the timer (a late driver still gets polled)",
           ("tests/test_emulator_device.py", "tests/test_emulator_guests.py")),
    Mutant("reset-keeps-stats-on-10", DEVICE, "if self.version >= (10, 0):", "if self.version > (10, 0):",
           "QEMU 10.0's reset clears the stats", ("tests/test_emulator_device.py", "tests/test_emulator_machine.py")),
    Mutant("last-update-vm-clock", DEVICE, "self.last_update = int(self.clock.wall_time())",
           "self.last_update = int(self.clock.vm_ns() // NS)", "last-update is host wall-clock seconds",
           ("tests/test_emulator_device.py",)),
    Mutant("coalesced-restamped", EVENTS, "        event, state[1] = state[1], None\n",
           "        event, state[1] = state[1], None\n        event[\"timestamp\"] = self._timestamp()\n",
           "a held-back BALLOON_CHANGE keeps the timestamp of when QEMU made it",
           ("tests/test_emulator_machine.py::test_held_back_balloon_change_keeps_the_timestamp_of_when_it_was_made",),
           (f"{GUEST_DIFF}::test_held_back_balloon_change_keeps_the_time_it_was_made",)),
    Mutant("no-rate-limit", EVENTS, 'EVENT_RATE_NS = {"BALLOON_CHANGE": NS}', "EVENT_RATE_NS: dict = {}",
           "QEMU sends at most one BALLOON_CHANGE a second", ("tests/test_emulator_machine.py",)),
    Mutant("rate-limit-period-1.5s", EVENTS, 'EVENT_RATE_NS = {"BALLOON_CHANGE": NS}',
           'EVENT_RATE_NS = {"BALLOON_CHANGE": NS * 3 // 2}', "the rate limit's period is 1000 ms",
           ("tests/test_emulator_machine.py",)),
    Mutant("coalesced-first-wins", EVENTS, "state[1] = event  # coalesced: the last one wins",
           "state[1] = state[1] or event", "the last held-back change wins", ("tests/test_emulator_machine.py",)),
    Mutant("unplug-accepted", MACHINE,
           '    if not value:\n        raise QMPError("GenericError", "balloonlab emulator: unrealizing',
           '    if not value:\n        return\n'
           '        raise QMPError("GenericError", "balloonlab emulator: unrealizing',
           "the emulator refuses an unplug in the words docs/differences.md quotes",
           ("tests/test_emulator_device.py::test_unplug_is_refused_in_the_documented_words_and_the_device_stays",),
           ("tests/test_differential_protocol.py::test_unrealize",)),
    Mutant("free-page-hint-accepted", CONFIG, "        if self.free_page_hint:\n", "        if False:\n",
           "QEMU 7.2 refuses free-page-hint=on without an iothread",
           ("tests/test_emulate_cli.py",),
           ("tests/test_differential_cmdline.py::"
            "test_free_page_hint_without_an_iothread_is_refused_by_both_in_qemus_words",)),
    Mutant("events-before-negotiation", SERVER, "            if client.negotiated:\n                client.send(line)",
           "            client.send(line)", "events reach only clients that negotiated",
           ("tests/test_emulator_server.py",), (f"{GUEST_DIFF}::test_events_need_negotiation",)),
    Mutant("error-loses-id", SERVER, 'reply: dict = {"id": request["id"]} if has_id else {}', "reply: dict = {}",
           "an error reply echoes the request's id", ("tests/test_emulator_server.py",)),
    Mutant("id-before-return", SERVER,
           'line = to_json({"return": {} if ret is None else ret, **({"id": request["id"]} if has_id else {})})',
           'line = to_json({**({"id": request["id"]} if has_id else {}), "return": {} if ret is None else ret})',
           "QEMU writes return before id", ("tests/test_emulator_server.py",)),
    Mutant("no-negotiation-needed", SERVER, "        if not client.negotiated:\n            # Until",
           "        if False:\n            # Until", "before qmp_capabilities every command is CommandNotFound",
           ("tests/test_emulator_server.py",)),
    Mutant("unexpected-member-accepted", SERVER,
           "            elif name != \"id\":\n                raise QMPError(\"GenericError\", "
           "f\"QMP input member '{name}' is unexpected\")",
           "            elif name != \"id\":\n                pass", "QEMU refuses unknown top-level members",
           ("tests/test_emulator_server.py",)),
    Mutant("small-reads", SERVER, "_READ_SIZE = 1 << 16", "_READ_SIZE = 1 << 4",
           "the server reads in 64 KiB pieces: 16-byte reads change no answer but make a large input crawl",
           ("tests/test_emulator_server.py::test_token_count_limit",)),
    Mutant("renegotiation-accepted", SERVER,
           "        if client.negotiated:\n            raise QMPError(\"CommandNotFound\", ALREADY_NEGOTIATED)",
           "        if False:\n            raise QMPError(\"CommandNotFound\", ALREADY_NEGOTIATED)",
           "a second qmp_capabilities is refused", ("tests/test_emulator_server.py",)),
]


def scratch_copy() -> Path:
    """The checkout's tracked and untracked-but-not-ignored files (the work in progress included) in a temp dir."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    root = Path(tempfile.mkdtemp(prefix="balloonlab-mutant-"))
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


def apply(mutant: Mutant, root: Path) -> None:
    path = root / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise LookupError(f"mutant {mutant.name}: its text occurs {text.count(mutant.old)} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, str]:
    """("killed" | "survived" | "error", the tail of pytest's output) for ``tests`` in the mutated copy."""
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1",
               BALLOONLAB_TEST_ARTIFACTS=str(root / ".artifacts"))
    env.pop("CI", None)  # a missing QEMU is a skip here: --qemu decides what runs
    env["BALLOONLAB_REQUIRE_ALL"] = "0"
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m",
                               "not browser", *tests], cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed", "timed out (a mutant that hangs the tests is caught)"
    tail = "\n".join(done.stdout.strip().splitlines()[-3:])
    if done.returncode == 1:
        return "killed", tail
    if done.returncode in (0, 5):
        return "survived", tail
    return "error", tail + done.stderr[-500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME", help="run this mutant (repeatable)")
    parser.add_argument("--killers", action="store_true", help="run only the tests each mutant names")
    parser.add_argument("--qemu", action="store_true", help="also run the real-QEMU tests each mutant names")
    parser.add_argument("--each", action="store_true",
                        help="run each named test on its own and report every one (shows which tests kill it)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown mutant in {args.only} (see --list)")
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28} {m.path:34} {m.why}")
        return 0
    results: list[tuple[Mutant, str, str, float]] = []
    for mutant in chosen:
        root = scratch_copy()
        try:
            try:
                apply(mutant, root)
            except LookupError as exc:
                print(exc, file=sys.stderr)
                return 2
            tests = list(mutant.killers) if args.killers else list(QEMU_FREE) + [
                k for k in mutant.killers if k.split("::")[0] not in QEMU_FREE]
            if args.qemu:
                tests += mutant.qemu_killers
            start = time.monotonic()
            if args.each:
                tests = list(mutant.killers) + (list(mutant.qemu_killers) if args.qemu else [])
                for test in tests:
                    alone, tail = run_tests(root, [test], args.timeout)
                    print(f"  {alone:8} {mutant.name} <- {test}: {tail.splitlines()[-1] if tail else ''}", flush=True)
                    results.append((mutant, alone, tail, time.monotonic() - start))
                continue
            outcome, tail = run_tests(root, tests, args.timeout)
            results.append((mutant, outcome, tail, time.monotonic() - start))
            last = tail.splitlines()[-1] if tail else ""
            print(f"{outcome:8} {mutant.name:28} ({time.monotonic() - start:5.1f} s) {last}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    killed = sum(outcome == "killed" for _, outcome, _, _ in results)
    print(f"\n{len(results)} mutants, {killed} killed, "
          f"{sum(o == 'survived' for _, o, _, _ in results)} survived, {sum(o == 'error' for _, o, _, _ in results)} "
          "errors")
    for mutant, outcome, tail, _ in results:
        if outcome != "killed":
            print(f"  {outcome}: {mutant.name} ({mutant.why})\n    {tail}")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
