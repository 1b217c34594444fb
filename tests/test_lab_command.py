"""``balloonlab lab``: finds the notebooks, passes options through to JupyterLab, lands on the quickstart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from balloonlab.cli import jupyter as lab
from tests.fixtures.requirements import require
from tests.fixtures.jupyter import ProcessId, child_pids, free_port, stop_process
from tests.helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "notebooks" / lab.QUICKSTART


def test_workdir_is_ours_everything_else_is_jupyterlabs() -> None:
    assert lab.split_args(["--no-browser", "--workdir", "/x", "--port", "8890"]) == (
        Path("/x"), ["--no-browser", "--port", "8890"])
    assert lab.split_args(["--workdir=/y"]) == (Path("/y"), [])
    assert lab.split_args(["--port=1"]) == (None, ["--port=1"])
    with pytest.raises(lab.JupyterLabError, match="--workdir needs a directory"):
        lab.split_args(["--workdir"])


def test_user_options_come_after_ours_so_they_win() -> None:
    home = lab.NotebookHome(Path("/srv/nb"), "notebooks/01-quickstart.ipynb")
    argv = lab.jupyterlab_argv(home, ["--ServerApp.root_dir=/elsewhere", "--no-browser"])
    assert argv[0] == "--ServerApp.root_dir=/srv/nb"
    assert argv[1] == "--LabApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb"
    assert argv[-2:] == ["--ServerApp.root_dir=/elsewhere", "--no-browser"]


def test_root_may_start_the_lab_unless_the_user_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    home = lab.NotebookHome(Path("/srv/nb"), "notebooks/01-quickstart.ipynb")
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    assert "--ServerApp.allow_root=True" in lab.jupyterlab_argv(home, [])
    assert lab.jupyterlab_argv(home, ["--allow-root"]).count("--allow-root") == 1
    assert "--ServerApp.allow_root=True" not in lab.jupyterlab_argv(home, ["--ServerApp.allow_root=False"])
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    assert "--ServerApp.allow_root=True" not in lab.jupyterlab_argv(home, [])


def test_checkout_serves_the_repository_root() -> None:
    home = lab.find_notebook_home(cwd=REPO_ROOT / "docs")  # anywhere inside the checkout
    assert home.root == REPO_ROOT and home.in_place
    assert (home.root / home.start).resolve() == QUICKSTART
    assert home.describe().startswith(f"serving {REPO_ROOT} in place: the repository's own notebooks, and "
                                      "JupyterLab saves outputs into them")


def test_outside_the_checkout_it_serves_a_copy_so_outputs_never_reach_the_repository(tmp_path: Path) -> None:
    before = QUICKSTART.read_bytes()
    home = lab.find_notebook_home(cwd=tmp_path)
    assert home.root == tmp_path / lab.DEFAULT_WORKDIR and not home.in_place and home.start == lab.QUICKSTART
    assert (home.root / lab.QUICKSTART).read_bytes() == before
    assert sorted(p.name for p in home.root.glob("*.ipynb")) == sorted(
        p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert "a working copy of the notebooks" in home.describe()
    # --workdir asks for a copy also inside the checkout
    assert lab.find_notebook_home(tmp_path / "mine", cwd=REPO_ROOT).root == tmp_path / "mine"


def test_one_ctrl_c_stops_it_and_the_news_prompt_is_off() -> None:
    argv = lab.jupyterlab_argv(lab.NotebookHome(Path("/srv/nb"), "01-quickstart.ipynb"), [])
    assert "--ServerApp.answer_yes=True" in argv and "--LabApp.news_url=None" in argv


def test_installed_copy_keeps_the_readers_edits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a checkout the shipped notebooks are copied once; a second start never overwrites an edited one."""
    shipped = tmp_path / "share" / "balloonlab" / "notebooks"
    shipped.mkdir(parents=True)
    (shipped / lab.QUICKSTART).write_text("shipped quickstart")
    (shipped / "02-other.ipynb").write_text("shipped other")
    monkeypatch.setattr(lab, "checkout_root", lambda: None)
    monkeypatch.setattr(lab, "shipped_notebooks", lambda: shipped)
    work = tmp_path / "work"

    home = lab.find_notebook_home(work)
    assert home == lab.NotebookHome(work.resolve(), lab.QUICKSTART)
    assert sorted(p.name for p in work.iterdir()) == [lab.QUICKSTART, "02-other.ipynb"]

    (work / lab.QUICKSTART).write_text("my edits")
    (work / "02-other.ipynb").unlink()
    lab.find_notebook_home(work)
    assert (work / lab.QUICKSTART).read_text() == "my edits"
    assert (work / "02-other.ipynb").read_text() == "shipped other"


def test_no_notebooks_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "checkout_root", lambda: None)
    monkeypatch.setattr(lab, "shipped_notebooks", lambda: None)
    with pytest.raises(lab.JupyterLabError, match="cannot find balloonlab's notebooks"):
        lab.find_notebook_home()


def test_without_jupyterlab_it_says_what_to_install() -> None:
    # A fresh interpreter in which "import jupyterlab" fails, as it does where the [lab] extra is not installed.
    code = (
        "import sys; sys.modules['jupyterlab'] = None\n"
        "from balloonlab.cli.jupyter import main\n"
        "sys.exit(main(['--no-browser']))\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert "pip install 'balloonlab[lab]'" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_help_names_the_passthrough(capsys: pytest.CaptureFixture) -> None:
    assert lab.main(["--help"]) == 0
    assert "--no-browser" in capsys.readouterr().out


@pytest.mark.slow
def test_balloonlab_lab_serves_the_quickstart(tmp_path: Path) -> None:
    """The real command, as a person runs it (plus options passed through): it serves and lands on the quickstart."""
    require("jupyterlab")
    port = free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               IPYTHONDIR=str(tmp_path / "ipython"))
    argv = [sys.executable, "-m", "balloonlab", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            "--IdentityProvider.token=", f"--LabApp.workspaces_dir={tmp_path}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}/"

    def status() -> bool:
        assert proc.poll() is None, f"balloonlab lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(base + "api/status", timeout=5).read()
        except (OSError, urllib.error.URLError):
            return False
        return True

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # report the redirect instead of following it
            return None

    try:
        wait_for(status, f"balloonlab lab to answer on port {port}", 60, interval=0.2)
        with pytest.raises(urllib.error.HTTPError) as landing:
            urllib.request.build_opener(NoRedirect).open(base, timeout=10)
        assert landing.value.code == 302
        location = landing.value.headers["Location"]
        assert urllib.parse.urlsplit(location).path == "/lab/tree/notebooks/01-quickstart.ipynb"
        with urllib.request.urlopen(base + "api/contents/notebooks/01-quickstart.ipynb?content=0", timeout=10) as r:
            assert r.status == 200
        assert f"serving {REPO_ROOT} in place" in log.read_text()
        with urllib.request.urlopen(base + "lab", timeout=10) as r:  # JupyterLab's page config for the front end
            assert '"news": {"disabled": true}' in r.read().decode()
        proc.send_signal(signal.SIGINT)  # one Ctrl-C, no prompt to answer
        assert proc.wait(timeout=60) == 0
    finally:
        kernels = [ProcessId.of(pid) for pid in child_pids(proc.pid)]
        stop_process(proc, grace=15)
        for kernel in kernels:
            kernel.kill()
