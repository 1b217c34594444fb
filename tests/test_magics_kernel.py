"""``%balloon`` and ``%%qmp`` in a real Jupyter kernel: ``tests/notebooks/magics.ipynb`` run by nbclient.

Why a real kernel as well as ``InteractiveShell``: the kernel runs its own asyncio loop (QMP must not block it),
sends display updates over IOPub from the lab's background thread, and renders errors through
``_render_traceback_``.  The notebook loads the extension, starts an emulated lab on a virtual clock, runs the
four examples of QEMU's stats doc verbatim, starts a watch (the cell returns at once) and checks the watch's
output is updated later, then feeds bad input and kills the emulated QEMU.  nbclient starts a fresh kernel and
shuts it down again, also when a cell fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from tests.helpers import json_values
from tests.magics_doc_examples import DISABLE_ERROR

NOTEBOOK = Path(__file__).parent / "notebooks" / "magics.ipynb"



@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The notebook after one run in a fresh python3 kernel (nbclient stops the kernel when it is done)."""
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    workdir = tmp_path_factory.mktemp("magics-kernel")
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, startup_timeout=60, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def cell(nb: Any, tag: str) -> Any:
    [found] = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return found


def stream(c: Any, name: str) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == name)


def errors(c: Any) -> list[Any]:
    return [o for o in c.outputs if o.output_type == "error"]


def test_the_stored_notebook_has_no_outputs():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_emulate_returns_the_lab(executed):
    [out] = cell(executed, "emulate").outputs
    assert out.output_type == "execute_result"
    assert out.data["text/plain"].startswith("<Balloon emulated QEMU 10.0")
    assert "/machine/peripheral-anon/device[1]" in out.data["text/plain"]


def test_the_docs_examples_get_qemus_answers_in_the_kernel(executed):
    for i in (0, 1):
        c = cell(executed, f"doc-{i}")
        assert json_values(stream(c, "stdout")) == [{"return": {}}] and not stream(c, "stderr")
    [stats] = json_values(stream(cell(executed, "doc-2"), "stdout"))
    assert set(stats["return"]) == {"stats", "last-update"} and len(stats["return"]["stats"]) == 16
    disable = cell(executed, "doc-3")
    assert json_values(stream(disable, "stderr")) == [{"error": DISABLE_ERROR}]
    assert not errors(disable) and not stream(disable, "stdout")  # shown as an error, not raised


def test_the_watch_cell_returns_at_once_and_its_display_is_updated_later(executed):
    [out] = cell(executed, "watch").outputs
    assert out.output_type == "display_data"
    advanced = cell(executed, "advance").outputs[-1].data["text/plain"]
    reports, published = (int(x) for x in advanced.strip("()").split(","))
    assert reports >= 1 and published >= 1
    # the watch cell's own output now carries the later states: updated, then stopped by `watch --stop`
    html = out.data["text/html"]
    assert "data-state='stopped'" in html
    shown = int(html.split("data-reports='")[1].split("'")[0])
    assert shown >= reports
    assert "free-memory" in out.data["text/plain"] and "watching (stopped)" in out.data["text/plain"]
    assert stream(cell(executed, "watch-stop"), "stdout") == "stopped 1 watch\n"


def test_bad_input_is_one_line_and_changes_nothing(executed):
    target = cell(executed, "bad-target")
    text = stream(target, "stderr") + "".join("\n".join(e.traceback) for e in errors(target))
    assert "UsageError: %balloon target: not a size: 'lots'" in text
    assert "Traceback" not in text and "File " not in text
    bad_qmp = cell(executed, "bad-qmp")
    text = stream(bad_qmp, "stderr") + "".join("\n".join(e.traceback) for e in errors(bad_qmp))
    assert "UsageError: %%qmp: line 5: JSON parse error" in text and "(nothing was sent)" in text
    # the first command of that cell (interval 0) was not sent: still 10 from the doc's examples
    [shown] = [o for o in cell(executed, "poll-after-bad").outputs if o.output_type == "execute_result"]
    assert shown.data["text/plain"] == "polling every 10 s"  # %balloon poll returns the int, shown in words


def test_a_dead_qemu_is_one_line(executed):
    assert json_values(stream(cell(executed, "quit"), "stdout"))[0] == {"return": {}}
    [error] = errors(cell(executed, "dead"))
    assert error.ename == "BalloonDisconnectedError"
    # one line, in the form every %balloon error has (the class stays BalloonDisconnectedError)
    assert len(error.traceback) == 1 and error.traceback[0].startswith("%balloon stats: lost the QMP connection")


def test_unload_closes_the_lab(executed):
    assert cell(executed, "unload").outputs[-1].data["text/plain"] == "True"


def test_rerunning_a_watch_cell_replaces_its_watch_and_other_cells_keep_theirs(tmp_path):
    """JupyterLab sends the cell's id with every execute request (metadata ``cellId``): a watch started again by
    the same cell stops the earlier one (its output is gone); watches of other cells, and watches started without
    a cell id, keep running.  nbclient sends no cell id, hence a kernel client of our own here."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60, cwd=str(tmp_path))

    def run(code: str, cell_id: str | None = None, expression: str | None = None) -> str:
        content = {"code": code, "silent": False, "store_history": True, "allow_stdin": False,
                   "stop_on_error": True, "user_expressions": {"x": expression} if expression else {}}
        msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        kc.shell_channel.send(msg)
        while True:
            reply = kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                break
        assert reply["content"]["status"] == "ok", reply["content"]
        if expression is None:
            return ""
        result = reply["content"]["user_expressions"]["x"]
        assert result["status"] == "ok", result
        return result["data"]["text/plain"]

    try:
        run("%load_ext balloonlab\nlab = %balloon emulate --clock virtual\n"
            "magics = get_ipython().magics_manager.registry['BalloonMagics']")
        run("%balloon watch\nfirst = magics.watches[-1]", cell_id="cell-a")
        run("%balloon watch\nother = magics.watches[-1]", cell_id="cell-b")
        run("%balloon watch\nsecond = magics.watches[-1]", cell_id="cell-a")  # cell a again
        run("%balloon watch\nplain1 = magics.watches[-1]")
        run("%balloon watch\nplain2 = magics.watches[-1]")
        state = run("", expression="(first.active, first.view().state, other.active, second.active, "
                                   "plain1.active, plain2.active, len(magics.watches), second.cell_id)")
        assert state == "(False, 'stopped', True, True, True, True, 4, 'cell-a')"
        run("%unload_ext balloonlab")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
