"""Binder's recipe works: an environment made from ``binder/`` alone runs the quickstart notebook.

repo2docker ignores the root's pyproject.toml once a ``binder/`` folder exists, so a dependency missing from
``binder/requirements.txt`` would only show up on mybinder.org. This test builds a fresh venv exactly as repo2docker
would install Python packages (``pip install -r binder/requirements.txt`` from the repository root, so ``-e .`` is
this checkout) and executes the quickstart in a kernel from that venv. pip's cache is reused; the first run still
takes a few minutes (marked ``slow``). If repo2docker itself can be pip-installed, its ``--no-build --debug`` run
(no Docker needed) must print a Dockerfile that installs our apt packages and runs our requirements and postBuild.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BINDER = REPO_ROOT / "binder"
QUICKSTART = REPO_ROOT / "notebooks" / "01-quickstart.ipynb"
PIP_TIMEOUT = 1500

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

# Runs inside the binder venv: executes the notebook with nbclient in a kernel of that venv and reports which
# Python the kernel was (a kernel borrowed from another environment would prove nothing).
RUN_NOTEBOOK = textwrap.dedent(
    """
    import json, sys
    import nbclient, nbformat
    path, workdir = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": workdir}}).execute()
    print(json.dumps({"kernel_prefix": nb.cells[-1].outputs[0]["text"].strip()}))
    """
)


def _run(argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding only what binder/requirements.txt installs (built once per run, removed afterwards: it is
    several hundred MB)."""
    requirements = BINDER / "requirements.txt"
    venv = tmp_path_factory.mktemp("binder") / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [str(python), "-m", "pip", "install", "-r", str(requirements.relative_to(REPO_ROOT))],
        timeout=PIP_TIMEOUT,
        cwd=REPO_ROOT,
    )
    try:
        assert installed.returncode == 0, f"pip install -r binder/requirements.txt failed:\n{installed.stderr[-4000:]}"
        yield venv
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_binder_requirements_install_the_lab(binder_venv: Path) -> None:
    """Everything a Binder session imports: the package (from this checkout), JupyterLab, the widget stack."""
    probe = _run(
        [
            str(binder_venv / "bin" / "python"),
            "-c",
            "import json, balloonlab, jupyterlab, ipywidgets, bqplot, ipykernel, nbclient;"
            "print(json.dumps({'balloonlab': balloonlab.__file__}))",
        ],
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    where = Path(json.loads(probe.stdout.strip().splitlines()[-1])["balloonlab"]).resolve()
    assert where.is_relative_to(REPO_ROOT), f"binder venv imports balloonlab from {where}, not the checkout"


def test_binder_env_runs_quickstart(binder_venv: Path, tmp_path: Path) -> None:
    env = dict(os.environ, IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_PREFER_ENV_PATH="1")
    env.pop("VIRTUAL_ENV", None)
    ran = _run(
        [str(binder_venv / "bin" / "python"), "-c", RUN_NOTEBOOK, str(QUICKSTART), str(QUICKSTART.parent)],
        timeout=900,
        env=env,
    )
    assert ran.returncode == 0, f"quickstart failed in the binder venv:\n{ran.stderr[-6000:]}"
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(report["kernel_prefix"]).resolve() == binder_venv.resolve()


def test_repo2docker_plans_our_image(binder_venv: Path) -> None:
    """repo2docker (if pip can install it) turns binder/ into a Dockerfile without Docker: check what it plans."""
    got = _run([str(binder_venv / "bin" / "python"), "-m", "pip", "install", "jupyter-repo2docker"], timeout=600)
    if got.returncode != 0:
        pytest.skip(f"jupyter-repo2docker is not installable here: {got.stderr.strip()[-300:]}")
    plan = _run([str(binder_venv / "bin" / "repo2docker"), "--no-build", "--debug", "."], timeout=300, cwd=REPO_ROOT)
    assert plan.returncode == 0, plan.stderr[-3000:]
    dockerfile = plan.stdout
    assert dockerfile.lstrip().startswith("FROM "), dockerfile[:500]
    apt_packages = (BINDER / "apt.txt").read_text().split()
    install_lines = [line for line in dockerfile.splitlines() if "apt-get install" in line]
    for package in apt_packages:
        assert any(package in line for line in install_lines), f"apt.txt package {package} is not installed"
    assert 'pip install --no-cache-dir -r "binder/requirements.txt"' in dockerfile
    if (BINDER / "postBuild").exists():
        assert "./binder/postBuild" in dockerfile
    if (BINDER / "runtime.txt").exists():
        version = (BINDER / "runtime.txt").read_text().strip().removeprefix("python-")
        assert f"python={version}" in plan.stderr, "runtime.txt's Python version was not picked up"
