"""``balloonlab lab``: JupyterLab, opened on the quickstart notebook.

The notebooks live in the repository's ``notebooks/`` folder. Where they are found, and where the command is
started, decides what JupyterLab serves:

* started inside a source checkout (``pip install -e .``, Binder): the checkout itself is the root and the
  notebooks are opened in place, so ``lab/tree/notebooks/01-quickstart.ipynb`` is the same URL as on Binder.
  JupyterLab autosaves outputs into those files; the command says so when it starts;
* anywhere else (an installed wheel, or a checkout's ``balloonlab`` run from another folder): the notebooks
  (``<prefix>/share/balloonlab/notebooks`` from a wheel, the checkout's own otherwise) must stay pristine, so they
  are copied into a working folder first (``./balloonlab-notebooks`` unless ``--workdir`` says otherwise) without
  overwriting a file already there -- a person's edits survive a second ``balloonlab lab``.  ``--workdir`` asks
  for a copy also inside a checkout.

Every other argument goes to JupyterLab unchanged (``--no-browser``, ``--port 8890``, ``--allow-root``...).
JupyterLab runs in this process; one Ctrl-C stops it (JupyterLab's own "Shutdown this Jupyter server (y/[n])?"
prompt is answered yes), and its "receive official Jupyter news?" prompt is off: a lab launcher should not
fetch a news feed or ask about it.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import JupyterLabError

QUICKSTART = "01-quickstart.ipynb"
DEFAULT_WORKDIR = "balloonlab-notebooks"
INSTALL_HINT = "pip install 'balloonlab[lab]'"

USAGE = f"""usage: balloonlab lab [--workdir DIR] [JUPYTERLAB OPTIONS...]

Start JupyterLab on the quickstart notebook ({QUICKSTART}), with the emulated backend ready to use.

  --workdir DIR   where to copy the notebooks when balloonlab is installed from a wheel rather than run from a
                  checkout (default: ./{DEFAULT_WORKDIR}; existing files are never overwritten)

Any other option is passed to JupyterLab, for example:
  balloonlab lab --no-browser --port 8890
See 'jupyter lab --help' for JupyterLab's own options. Needs JupyterLab: {INSTALL_HINT}"""


@dataclass(frozen=True)
class NotebookHome:
    """What JupyterLab should serve (``root``) and which notebook to open first (``start``, relative to root)."""

    root: Path
    start: str
    #: True: the repository's own notebooks (JupyterLab autosaves outputs into them); False: a working copy.
    in_place: bool = False

    def describe(self) -> str:
        """What is served, in one line for the person who started it."""
        if self.in_place:
            return (f"serving {self.root} in place: the repository's own notebooks, and JupyterLab saves outputs "
                    f"into them (start it from another folder, or with --workdir DIR, to work on a copy)")
        return f"serving {self.root}: a working copy of the notebooks (the originals stay as they are)"

    @property
    def url_path(self) -> str:
        """The JupyterLab URL path of the start notebook, e.g. ``/lab/tree/notebooks/01-quickstart.ipynb``."""
        return f"/lab/tree/{self.start}"


def checkout_root() -> Path | None:
    """The source checkout this package is imported from, if it is one (it has pyproject.toml and notebooks/)."""
    root = Path(__file__).resolve().parents[2]  # balloonlab/cli/jupyter.py -> the checkout
    if (root / "pyproject.toml").is_file() and (root / "notebooks" / QUICKSTART).is_file():
        return root
    return None


def shipped_notebooks() -> Path | None:
    """The notebooks installed as data files (``share/balloonlab/notebooks`` under the install prefix)."""
    prefixes = [Path(sysconfig.get_path("data")), Path(sys.prefix)]
    if site.ENABLE_USER_SITE and site.USER_BASE:
        prefixes.append(Path(site.USER_BASE))
    for prefix in prefixes:
        candidate = prefix / "share" / "balloonlab" / "notebooks"
        if (candidate / QUICKSTART).is_file():
            return candidate
    return None


def copy_notebooks(source: Path, workdir: Path) -> list[Path]:
    """Copy the shipped notebooks into ``workdir``; files already there are kept. Returns the files copied."""
    workdir.mkdir(parents=True, exist_ok=True)
    copied = []
    for notebook in sorted(source.glob("*.ipynb")):
        target = workdir / notebook.name
        if not target.exists():
            shutil.copyfile(notebook, target)
            copied.append(target)
    return copied


def find_notebook_home(workdir: Path | None = None, cwd: Path | None = None) -> NotebookHome:
    """Where the notebooks are served from: the checkout in place when started inside it (``cwd``, default the
    current folder) without ``workdir``; else a working copy (made on first use) of the checkout's notebooks or,
    without a checkout, of the shipped ones."""
    root = checkout_root()
    here = (cwd or Path.cwd()).resolve()
    if root is not None and workdir is None and here.is_relative_to(root):
        return NotebookHome(root, f"notebooks/{QUICKSTART}", in_place=True)
    source = root / "notebooks" if root is not None else shipped_notebooks()
    if source is None:
        raise JupyterLabError(
            "cannot find balloonlab's notebooks: this installation has neither a source checkout next to the "
            "package nor share/balloonlab/notebooks. Reinstall balloonlab (pip install --force-reinstall "
            "'balloonlab[lab]') or run 'balloonlab lab' from a clone of the repository (pip install -e '.[lab]')."
        )
    target = (workdir or here / DEFAULT_WORKDIR).resolve()
    copied = copy_notebooks(source, target)
    if copied:
        print(f"balloonlab lab: copied {len(copied)} notebook(s) into {target}", file=sys.stderr)
    return NotebookHome(target, QUICKSTART)


def split_args(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Take ``--workdir DIR`` / ``--workdir=DIR`` out of ``argv``; everything else is JupyterLab's."""
    workdir: Path | None = None
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--workdir":
            value = next(args, None)
            if value is None:
                raise JupyterLabError("--workdir needs a directory")
            workdir = Path(value)
        elif arg.startswith("--workdir="):
            workdir = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return workdir, rest


def jupyterlab_argv(home: NotebookHome, extra: Sequence[str]) -> list[str]:
    """JupyterLab's command line: serve ``home.root``, land on the start notebook, then the user's own options
    (later options win in traitlets, so a user's ``--ServerApp.root_dir`` still takes effect)."""
    argv = [
        f"--ServerApp.root_dir={home.root}",
        f"--LabApp.default_url={home.url_path}",
        "--ServerApp.answer_yes=True",  # one Ctrl-C stops it, without the "Shutdown this server?" prompt
        "--LabApp.news_url=None",  # no news feed, and no "receive official Jupyter news?" prompt
    ]
    # Containers, CI machines and classroom VMs often run everything as root, where Jupyter refuses to start
    # unless told otherwise; a lab launcher should just start there.
    if os.geteuid() == 0 and not any(a.startswith("--allow-root") or "allow_root" in a for a in extra):
        argv.append("--ServerApp.allow_root=True")
    return [*argv, *extra]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``balloonlab lab`` (dispatched from balloonlab/cli.py)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        workdir, extra = split_args(args)
        try:
            from jupyterlab.labapp import LabApp
        except ImportError as exc:
            raise JupyterLabError(
                f"balloonlab lab needs JupyterLab, which is not installed ({exc}): {INSTALL_HINT}") from None
        home = find_notebook_home(workdir)
    except JupyterLabError as exc:
        print(f"balloonlab lab: {exc}", file=sys.stderr)
        return 1
    print(f"balloonlab lab: {home.describe()}; opening {home.start}", file=sys.stderr)
    LabApp.launch_instance(argv=jupyterlab_argv(home, extra))
    return 0
