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


def run_all(lab_page, path: Path) -> None:
    """Copy a notebook into the server's root (never run the repository's copy), open it, Run All."""
    target = lab_page.server.root_dir / "notebooks" / path.name
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, target)
    lab_page.open_notebook(f"notebooks/{path.name}")
    lab_page.run_all_cells(timeout=600)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(path: Path, lab_page) -> None:
    require_in_ci(*notebook_needs(path))
    run_all(lab_page, path)

    assert lab_page.error_outputs() == []
    assert lab_page.unexecuted_cells() == [], "run-all stopped early (an error?)"
    assert lab_page.widget_errors() == 0
    lab_page.screenshot(f"notebook-{path.stem}")


def test_quickstart_panel_outlives_its_lab(lab_page) -> None:
    """Run All on 01-quickstart ends with ``%balloon close``: the panel is still rendered, says the lab is closed,
    and still shows its last numbers (its widgets are frozen, not closed)."""
    run_all(lab_page, NOTEBOOK_DIR / "01-quickstart.ipynb")
    assert lab_page.unexecuted_cells() == []

    # JupyterLab renders only the cells near the viewport: bring the panel's cell ("panel = %balloon panel") in.
    lab_page.page.evaluate("""async () => {
        const nb = window.jupyterapp.shell.currentWidget.content;
        const index = nb.widgets.findIndex(c => c.model.sharedModel.getSource().startsWith('panel = %balloon panel'));
        nb.activeCellIndex = index;
        await nb.scrollToItem(index, 'start');
    }""")
    panel = ".balloonlab-panel.balloonlab-closed"
    lab_page.page.wait_for_selector(panel, state="visible", timeout=30_000)
    assert lab_page.page.locator(panel).count() == 1
    status = lab_page.text(f"{panel} .balloonlab-status")
    assert status.startswith("closed: the lab was closed (%balloon close)"), status
    table = lab_page.text(f"{panel} .balloonlab-stats")
    assert "free-memory" in table and "MiB" in table, table
    for slider in ("balloonlab-interval", "balloonlab-target"):  # ipywidgets marks a disabled slider's track
        assert lab_page.page.locator(f"{panel} .{slider} .noUi-target[disabled]").count() == 1, slider
    assert "closed" in lab_page.text(f"{panel} .balloonlab-doctor")
    # the stats table fits the panel: no column (the meaning column last) is cut at the panel's right edge
    overflow = lab_page.page.evaluate("""(sel) => {
        const panel = document.querySelector(sel), table = panel.querySelector('.balloonlab-stats table');
        return table.getBoundingClientRect().right - panel.getBoundingClientRect().right;
    }""", panel)
    assert overflow <= 1, f"the stats table runs {overflow:.0f} px past the panel"
    assert lab_page.widget_errors() == 0
    lab_page.screenshot("notebook-01-quickstart-closed-panel", selector=panel)
