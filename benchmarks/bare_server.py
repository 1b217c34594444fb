"""Python's floor for a QMP round trip: a bare asyncio unix-socket server, the baseline of ``rtt_*_vs_bare_raw``.

``python benchmarks/bare_server.py SOCKET`` serves until SIGTERM.  It does the least a QMP server written in Python
must do per request: ``json.loads`` the bytes of one read (it assumes one whole request per read, which the
benchmark's blocking client guarantees), and write a ``guest-stats`` reply with the 16 stats of QEMU >= 9.2 (every
one unset, as the paused emulator and QEMU without a guest answer) with ``json.dumps``.  No stream framing, no
QEMU error texts, no QOM: what is left of the emulator's cost above this is the price of being QEMU-faithful.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

UNSET = 2**64 - 1
STATS = ("swap-in", "swap-out", "major-faults", "minor-faults", "free-memory", "total-memory", "available-memory",
         "disk-caches", "hugetlb-allocations", "hugetlb-failures", "oom-kills", "alloc-stalls", "async-scans",
         "direct-scans", "async-reclaims", "direct-reclaims")
GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}


class BareQMP(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(json.dumps(GREETING).encode() + b"\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        request = json.loads(data)
        if request.get("execute") == "qom-get":
            reply = {"return": {"stats": {"stat-" + name: UNSET for name in STATS}, "last-update": 0}}
        else:
            reply = {"return": {}}
        self.transport.write(json.dumps(reply).encode() + b"\r\n")  # type: ignore[attr-defined]


async def serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_unix_server(BareQMP, path)
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()
        os.unlink(path)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
