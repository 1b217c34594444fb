"""Every teaching notebook, run in JupyterLab in a real browser: its widgets render and no cell fails.

``test_notebooks.py`` proves the notebooks run in a kernel; only a browser shows whether their widgets (the
panel, bqplot plots) render for the reader. Each notebook is copied into the test server's temporary root (the
repository's copy is never touched), run with JupyterLab's "run all cells" and checked for "Error displaying
widget", error outputs outside ``raises-exception`` cells, and cells that never ran. A screenshot of each run goes
to the artifacts directory (tests/helpers.py: artifacts_dir).  In CI a live notebook needs its QEMU and guest
image (tests/fixtures/requirements.py: notebook_needs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.requirements import notebook_needs, require_in_ci

pytestmark = pytest.mark.browser

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path: Path, lab_page) -> None:
    require_in_ci(*notebook_needs(path))
    target = lab_page.server.root_dir / "notebooks" / path.name
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, target)
    lab_page.open_notebook(f"notebooks/{path.name}")
    lab_page.run_all_cells(timeout=600)

    assert lab_page.error_outputs() == []
    assert lab_page.unexecuted_cells() == [], "run-all stopped early (an error?)"
    assert lab_page.widget_errors() == 0
    lab_page.screenshot(f"notebook-{path.stem}")
