"""balloonlab's benchmarks: ``python benchmarks/run.py [--quick] [--json out.json] [--only MODULE ...]``.

Prints one table (figure, value, goal, met) and writes every figure with its details and the machine it ran on
as JSON.  What is measured and how: docs/benchmarks.md and each module's docstring.  ``--quick`` runs a short
version of everything (same keys; used by tests/test_benchmarks_smoke.py, which never looks at the values).
Figures that compare are ratios against a baseline measured in the same run, interleaved with the candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import Result

MODULES = ("roundtrip", "emulated", "launched", "fleet", "panel", "recording", "host", "policy")

#: Every key the runner emits, in table order (a module that fails still emits its keys, with value None).
KEYS = {
    "roundtrip": ("rtt_emulator_vs_qemu_raw", "rtt_bare_vs_qemu_raw", "rtt_emulator_vs_bare_raw",
                  "rtt_emulator_vs_qemu_qmpclient", "lab_stats_vs_qmpclient_qemu", "lab_stats_vs_qmpclient_emulator"),
    "emulated": ("virtual_clock_24h_cpu_s", "virtual_clock_24h_unrecorded_cpu_s", "first_stats_emulated_ms",
                 "first_stats_emulated_virtual_ms", "first_stats_emulated_cold_ms"),
    "launched": ("first_stats_launched_vs_bare_boot",),
    "fleet": ("fleet_10_cpu_percent", "fleet_10_subscribed_cpu_percent", "fleet_100_cpu_percent",
              "fleet_100_subscribed_cpu_percent", "fleet_baseline_cpu_percent"),
    "panel": ("panel_update_cpu_ms", "history_24h_mb"),
    "recording": ("recording_day_2s_mb", "recording_cpu_overhead_percent",
                  "recording_cpu_overhead_back_to_back_percent"),
    "host": ("host_100_ready_s", "host_20_24h_cpu_s", "host_100_idle_cpu_percent"),
    "policy": ("policy_day_4vms_cpu_s", "policy_day_20vms_cpu_s"),
}


def _run_module(name: str, quick: bool) -> list[Result]:
    import importlib

    started = time.monotonic()
    try:
        results = importlib.import_module(name).run(quick=quick)
    except Exception as exc:  # one broken measurement must not hide the others
        traceback.print_exc()
        return [Result(k, None, "", note=f"failed: {type(exc).__name__}: {exc}") for k in KEYS[name]]
    missing = [k for k in KEYS[name] if k not in {r.key for r in results}]
    results += [Result(k, None, "", note="not measured") for k in missing]
    print(f"  {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return results


def table(results: list[Result]) -> str:
    rows = [("figure", "value", "unit", "goal", "met", "note")]
    for r in results:
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        rows.append((r.key, "n/a" if r.value is None else f"{r.value:g}", r.unit, r.goal or "-", met, r.note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs of everything (for smoke tests)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--only", nargs="+", choices=MODULES, help="run only these modules")
    args = parser.parse_args(argv)
    info = _common.machine()
    started = time.time()
    calibration_before = _common.calibration()
    results: list[Result] = []
    for name in args.only or MODULES:
        results += _run_module(name, args.quick)
    calibration_after = _common.calibration()
    results.append(Result("calibration_ms", round((calibration_before + calibration_after) / 2, 2), "ms CPU",
                          note=f"2000 JSON round trips of a guest-stats reply (before {calibration_before:.1f}, "
                               f"after {calibration_after:.1f})"))
    print(f"balloonlab benchmarks{' (quick)' if args.quick else ''} on {info['nproc']} x {info['cpu']}, "
          f"{info['qemu'] or 'no QEMU'}, Python {info['python']}")
    print(table(results))
    if args.json:
        info["loadavg_at_end"] = os.getloadavg()
        doc = {"quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "seconds": round(time.time() - started, 1), "machine": info,
               "results": {r.key: r.as_json() for r in results}}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
