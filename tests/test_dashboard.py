"""``balloonlab dashboard`` in headless Chromium: a libvirt host's VMs as a Voila page, token-protected, loopback
only, and stopped cleanly by Ctrl-C (SIGINT to the command, as a terminal sends it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.jupyter import child_pids, free_port
from tests.fixtures.requirements import require
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

READY_PATH = "voila/static/voila.js"  # a static file: asking for it starts no kernel
TOKEN = "dashboard-test-token"


class Dashboard:
    """A ``balloonlab dashboard`` process; :meth:`interrupt` is Ctrl-C, :meth:`kill` the teardown of last resort."""

    def __init__(self, uris: list[str], tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = tmp_path / "dashboard.log"
        self._log = self.log_path.open("w")
        balloonlab = Path(sys.executable).with_name("balloonlab")
        self.proc = subprocess.Popen(
            [str(balloonlab), "dashboard", *uris, f"--port={self.port}", f"--token={TOKEN}"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + READY_PATH, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.HTTPError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{self.log()[-2000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def interrupt(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            kernels = child_pids(self.proc.pid)  # in sessions of their own: the group kill would miss them
            os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in kernels:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def _status_without_token(url: str) -> int:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def chromium_page(chromium):
    """A page in the shared headless Chromium (tests/fixtures/jupyter.py), closed after the test."""
    require("voila")
    page = chromium.new_page()
    page.set_viewport_size({"width": 1200, "height": 1600})
    yield page
    page.close()


@pytest.mark.libvirt
@pytest.mark.qemu
def test_the_dashboard_shows_a_libvirt_hosts_vms_behind_a_token_and_stops_on_ctrl_c(
        libvirtd, chromium_page, tmp_path):
    libvirtd.define_vm("web1", memory_mib=256)
    dashboard = Dashboard([libvirtd.uri], tmp_path)
    try:
        dashboard.wait_ready()
        assert _status_without_token(dashboard.url) in (302, 403)  # the login page, never the VMs
        assert f"127.0.0.1:{dashboard.port}" in dashboard.log()

        page = chromium_page
        page.goto(dashboard.url + f"?token={TOKEN}", timeout=120_000)
        page.wait_for_selector(".balloonlab-dashboard.balloonlab-fleet", timeout=120_000)
        row = page.locator(".balloonlab-fleet-row", has_text="web1")
        row.wait_for(timeout=30_000)
        assert page.locator(".balloonlab-fleet-row").count() == 1
        assert "real clock" in page.inner_text(".balloonlab-fleet")
        # the guest reports every 2 s: the row's doctor says so, from the live numbers
        wait_for(lambda: "healthy" in row.locator(".balloonlab-doctor").inner_text(), "web1's doctor", 30,
                 interval=0.2)
        assert "RSS" in row.locator(".balloonlab-fleet-numbers").inner_text()
        assert page.locator("text=Error displaying widget").count() == 0
        assert page.locator(".jp-InputArea, .input_area").count() == 0  # no code on the page

        kernels = child_pids(dashboard.proc.pid)
        assert kernels, "Voila runs the page in a kernel of its own"
        assert dashboard.interrupt() == 0
        assert "balloonlab dashboard: stopped" in dashboard.log()
        assert wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in kernels),
                        "the page's kernel to stop", 15)
    finally:
        dashboard.kill()


def test_without_a_uri_the_dashboard_shows_emulated_vms(chromium_page, tmp_path):
    dashboard = Dashboard([], tmp_path)
    try:
        dashboard.wait_ready()
        page = chromium_page
        page.goto(dashboard.url + f"?token={TOKEN}", timeout=120_000)
        page.wait_for_selector(".balloonlab-dashboard.balloonlab-fleet", timeout=120_000)
        for name in ("vm0", "vm1", "vm2"):
            page.locator(".balloonlab-fleet-row", has_text=name).wait_for(timeout=30_000)
        assert page.locator("text=Error displaying widget").count() == 0
        # read-only without --allow-changes: anyone with the token sees the page, nobody moves a target from it
        assert page.locator(".balloonlab-fleet-row .widget-slider [disabled]").count() == 3
        assert dashboard.interrupt() == 0
    finally:
        dashboard.kill()
