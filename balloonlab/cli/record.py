"""``balloonlab record SOCKET -o FILE --duration 10m [--interval 2]``: record a running QEMU from the command line.

Attaches to any QMP socket (a live QEMU, ``balloonlab emulate``, or a VM managed elsewhere while its socket is
free), optionally sets the polling interval, records for the duration or until Ctrl-C/SIGTERM, and ends the file
properly either way.  The library side is ``lab.record`` (client/recording.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Sequence

from ..errors import BalloonError
from ..units import format_duration, parse_duration, parse_interval


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration > 0, e.g. 10m")
    return seconds


def _interval(text: str) -> int:
    """units.parse_interval: the words lab.polling_interval and %balloon poll use."""
    try:
        return parse_interval(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="balloonlab record",
        description="Record a VM's balloon (every QMP exchange balloonlab makes, every event, every stats report) "
                    "to a file that balloonlab.replay() plays back.")
    parser.add_argument("socket", help="the VM's QMP unix socket (-qmp unix:PATH,server=on,wait=off)")
    parser.add_argument("-o", "--output", required=True, help="the recording (FILE.blab, or FILE.blab.gz compressed)")
    parser.add_argument("--duration", type=_duration, default=None,
                        help="how long to record: 90s, 10m, 24h (default: until Ctrl-C)")
    parser.add_argument("--interval", type=_interval, default=None,
                        help="set guest-stats-polling-interval first (seconds; default: leave it as it is)")
    parser.add_argument("--description", default="", help="a line kept in the header")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    from ..client.balloon import connect

    try:
        with connect(args.socket) as lab:
            if args.interval is not None:
                lab.polling_interval = args.interval
            rec = lab.record(args.output, description=args.description)
            how_long = f"for {format_duration(args.duration)}" if args.duration else "until Ctrl-C"
            print(f"recording QEMU {lab.qemu_version} ({lab.device_path}, polling every {lab.polling_interval} s) "
                  f"to {rec.path} {how_long}", flush=True)
            stop.wait(args.duration)
            failed = rec.state == "failed"
            rec.stop()
            print(f"{'FAILED: ' + str(rec.error) if failed else 'done'}: {rec.reports} reports, "
                  f"{rec.records} records in {rec.path}")
            return 1 if failed else 0
    except BalloonError as exc:
        print(f"balloonlab record: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
