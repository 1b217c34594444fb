"""Every teaching notebook runs top to bottom in a fresh kernel, as a reader would run it.

One test per ``notebooks/*.ipynb`` (stored without outputs), executed with nbclient in a new python3 kernel from
this environment, working directory ``notebooks/``. A cell that raises fails the test unless the notebook tags it
``raises-exception`` (a deliberate error shown to the reader). The live-QEMU notebook needs qemu-system-x86_64 and
the guest image; where they are missing it says so and replays a recording of the same session made from real
QEMU instead, so it passes here too (a test runs it so, without QEMU on PATH) -- in CI
(tests/fixtures/requirements.py) it must run live, where a replay instead would prove nothing new.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.requirements import notebook_needs, require_in_ci

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Per-cell limit; a live cell boots QEMU under TCG, which takes tens of seconds on a busy machine.
CELL_TIMEOUT = 300


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_in_ci(*notebook_needs(path))
    run_notebook(path, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_live_qemu_notebook_replays_a_real_recording_where_qemu_is_missing(tmp_path, monkeypatch):
    """As on Binder: no qemu-system-x86_64 on PATH (only this Python's directory), so notebook 04 plays the
    shipped recording of the same session instead of skipping, and every cell (the exercise's check included)
    runs on it."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert shutil.which("qemu-system-x86_64") is None
    nb = run_notebook(NOTEBOOK_DIR / "04-live-qemu.ipynb", tmp_path, monkeypatch)
    text = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "replay a recorded real session instead" in text and "recording: QEMU 7.2." in text
    assert "BALLOON_CHANGE" in text and "right: disk-caches grew by" in text


def run_notebook(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Execute a notebook in a fresh kernel (failing at the first cell that raises); the executed notebook."""
    import nbclient
    import nbformat

    # A private IPython profile dir: no shared history database, no user startup files.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))

    nb = nbformat.read(str(path), as_version=4)
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"{path.name} is stored with outputs in cells {stored}: strip them (nbstripout)"
    assert any(c.cell_type == "code" for c in nb.cells), f"{path.name} has no code cells"

    # Raises nbclient.exceptions.CellExecutionError (with the traceback) at the first cell that fails.
    nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    ).execute()
    return nb
