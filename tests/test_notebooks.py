"""Every teaching notebook runs top to bottom in a fresh kernel, as a reader would run it.

One test per ``notebooks/*.ipynb`` (stored without outputs), executed with nbclient in a new python3 kernel from
this environment, working directory ``notebooks/``. A cell that raises fails the test unless the notebook tags it
``raises-exception`` (a deliberate error shown to the reader). The live-QEMU notebook needs qemu-system-x86_64 and
the guest image; where they are missing it must say so and skip its live cells itself, so it passes here too --
except in CI (tests/fixtures/requirements.py), where a live notebook that skipped its cells would prove nothing.
"""

from __future__ import annotations

from pathlib import Path

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
    import nbclient
    import nbformat

    require_in_ci(*notebook_needs(path))
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
