"""BalloonPanel rendered by Voila in headless Chromium: the dashboard path (no notebook UI, same widgets).

Voila runs the notebook in its own kernel and renders only the outputs: the panel must show up with both
sliders and its bqplot figure, without "Error displaying widget", and keep updating from the kernel's background
thread (the last-update stamp moves while polling runs).  JupyterLab is covered by test_browser_panel.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.requirements import CHROMIUM, require
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: A static file Voila serves once its web app is up.
READY_PATH = "voila/static/voila.js"
NOTEBOOK_CELL = ('import balloonlab\nlab = balloonlab.emulate(guest="linux")\nlab.polling_interval = 1\n'
                 'panel = balloonlab.BalloonPanel(lab)\npanel')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def voila_url(tmp_path: Path):
    """A Voila server on a notebook that shows the panel; stopped (its whole process group) afterwards."""
    import nbformat

    require("voila")
    voila = Path(sys.executable).with_name("voila")
    assert voila.exists(), f"the voila module is installed but its command is not next to {sys.executable}"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "panel.ipynb")
    port = _free_port()
    log = (tmp_path / "voila.log").open("w")
    proc = subprocess.Popen(
        [str(voila), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1", "panel.ipynb"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        # Ready when Voila serves its own front-end script (200): a static file, so the check starts no kernel
        # (GET / would run the notebook once more). Voila has no /api/status: it redirects that to its files
        # handler, which answers 403 whether or not the server is ready to render.
        deadline = time.monotonic() + 60
        last: object = None
        while True:
            try:
                with urllib.request.urlopen(url + READY_PATH, timeout=2) as resp:
                    if resp.status == 200:
                        break
                    last = resp.status
            except (urllib.error.HTTPError, OSError) as exc:
                last = exc
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Voila did not serve {READY_PATH} (last: {last!r}):\n"
                            + (tmp_path / "voila.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def test_voila_renders_the_live_panel(voila_url: str) -> None:
    require("chromium", "playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.goto(voila_url, timeout=120_000)
            page.wait_for_selector(".balloonlab-panel .balloonlab-last-update-stamp", timeout=120_000)
            assert page.locator(".balloonlab-panel .widget-slider").count() == 2
            assert page.locator(".balloonlab-plot svg").count() >= 1
            page.wait_for_selector(".balloonlab-stats tr[data-stat='free-memory']", timeout=30_000)
            first = page.inner_text(".balloonlab-last-update-stamp")
            wait_for(lambda: page.inner_text(".balloonlab-last-update-stamp") != first,
                     "the panel to update in Voila", 30, interval=0.2)
            assert page.locator("text=Error displaying widget").count() == 0
        finally:
            browser.close()
