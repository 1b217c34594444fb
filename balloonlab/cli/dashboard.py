"""``balloonlab dashboard [URI ...]``: the fleet of some libvirt hosts as a web page, for people who do not write
notebooks.

It writes a one-cell notebook (``balloonlab.widgets.dashboard``) into a private temporary folder and serves it with
Voila, which runs the cell in its own kernel and shows only the widgets: no code.  Loopback only unless ``--ip``
says otherwise, and protected by a token (generated unless ``--token`` gives one; the URL printed at start carries
it, as ``jupyter lab`` prints its own).  Voila runs in this process, so Ctrl-C stops it, and the kernel with the
libvirt connections; the folder is removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

NOTEBOOK = "balloonlab-dashboard.ipynb"
INSTALL_HINT = "pip install voila (or 'balloonlab[test]')"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="balloonlab dashboard",
        description="Serve the balloons of every running VM on these libvirt hosts (or, with no URI, of an "
                    "emulated host) as a live web page through Voila.")
    p.add_argument("uris", nargs="*", metavar="URI", help="libvirt URIs: qemu:///system, qemu+ssh://HOST/system")
    p.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only; use an ssh tunnel to reach it)")
    p.add_argument("--token", default=None, help="the access token (default: a new random one)")
    p.add_argument("--allow-changes", action="store_true",
                   help="let the page move the VMs' balloon targets (default: it only shows them; anyone with the "
                        "token could otherwise change operators' VMs)")
    p.add_argument("--no-browser", action="store_true", help="accepted for symmetry with jupyter; never opens one")
    return p


def notebook_cell(uris: Sequence[str], allow_changes: bool = False) -> str:
    """The one cell the page runs (the URIs as JSON: a URI is data, never code)."""
    return ("import json\nfrom balloonlab.widgets.dashboard import dashboard_view, open_source\n"
            f"source = open_source(json.loads({json.dumps(json.dumps(list(uris)))}))\n"
            f"dashboard_view(source, allow_changes={bool(allow_changes)!r})")


def write_notebook(folder: Path, uris: Sequence[str], allow_changes: bool = False) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(notebook_cell(uris, allow_changes))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / NOTEBOOK
    nbformat.write(nb, path)
    return path


def voila_argv(notebook: Path, port: int, ip: str, token: str) -> list[str]:
    return [str(notebook), "--no-browser", f"--port={port}", f"--Voila.ip={ip}", f"--Voila.token={token}",
            "--Voila.port_retries=0"]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        from voila.app import Voila
    except ImportError as exc:
        print(f"balloonlab dashboard: Voila is not installed ({exc}): {INSTALL_HINT}", file=sys.stderr)
        return 1
    token = args.token or secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="balloonlab-dashboard-"))  # 0700: only this user reads it
    try:
        notebook = write_notebook(folder, args.uris, args.allow_changes)
        what = ", ".join(args.uris) if args.uris else "an emulated host"
        print(f"balloonlab dashboard: {what} at http://{args.ip}:{args.port}/?token={token}  (Ctrl-C stops it)",
              file=sys.stderr, flush=True)
        try:
            Voila.launch_instance(argv=voila_argv(notebook, args.port, args.ip, token))
        except KeyboardInterrupt:
            pass
        finally:
            Voila.clear_instance()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("balloonlab dashboard: stopped", file=sys.stderr)
    return 0
