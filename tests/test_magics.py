"""``%balloon`` and ``%%qmp`` in a real IPython ``InteractiveShell`` against real emulated labs.

Every test gets a fresh shell (history off) with the extension loaded; teardown unloads it (which closes the labs
the magics started) and clears the shell singleton.  A real Jupyter kernel runs the same magics in
``test_magics_kernel.py``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import balloonlab
from balloonlab.client import loop as _loop
from balloonlab.magics.core import NO_LAB_HINT, BalloonMagics
from balloonlab.magics.info import LabInfo
from balloonlab.magics.subcommands import SUBCOMMANDS
from balloonlab.stats import GuestStats
from tests.fixtures.ipython import ip  # noqa: F401  (fixture)
from tests.fixtures.qemu import qemu_binary, start_vm  # noqa: F401  (fixtures)
from tests.helpers import json_values, wait_for
from tests.magics_doc_examples import DISABLE_ERROR, DOC_PATH, RST_EXAMPLES, TXT_EXAMPLES

MiB = 1 << 20


def magics_of(shell: InteractiveShell) -> BalloonMagics:
    return shell.magics_manager.registry["BalloonMagics"]


@pytest.fixture
def lab(ip: InteractiveShell) -> Any:
    """An emulated lab (real clock, linux guest, QEMU 10.0, balloon where the stats doc puts it)."""
    return ip.run_line_magic("balloon", "emulate")


@pytest.fixture
def booted_lab(lab: Any) -> Any:
    """``lab`` once its guest has booted: the linux guest's driver sends one report when it loads (about 1 s)."""
    wait_for(lambda: lab.stats().reported, "the emulated guest's boot report")
    return lab


@pytest.fixture
def vlab(ip: InteractiveShell) -> Any:
    """An emulated lab on a virtual clock: time moves only with %balloon advance."""
    return ip.run_line_magic("balloon", "emulate --clock virtual")


def balloon(ip: InteractiveShell, line: str) -> Any:
    return ip.run_line_magic("balloon", line)


def qmp(ip: InteractiveShell, cell: str, line: str = "") -> Any:
    return ip.run_cell_magic("qmp", line, cell)


# --------------------------------------------------------------------------------------------------------------
# loading, help


def test_load_registers_both_magics_and_unload_removes_them_and_closes_the_lab(ip):
    assert "balloon" in ip.magics_manager.magics["line"]
    assert "qmp" in ip.magics_manager.magics["cell"]
    lab = balloon(ip, "emulate")
    with capture_output():
        balloon(ip, "watch")
    watches = list(magics_of(ip).watches)
    ip.run_line_magic("unload_ext", "balloonlab")
    assert "balloon" not in ip.magics_manager.magics["line"]
    assert "qmp" not in ip.magics_manager.magics["cell"]
    assert "BalloonMagics" not in ip.magics_manager.registry
    assert lab.closed
    assert watches and not any(w.active for w in watches)
    ip.run_line_magic("load_ext", "balloonlab")  # and back again, with a fresh state
    assert magics_of(ip).lab is None


def test_reload_ext_starts_over_with_a_fresh_state(ip):
    lab = balloon(ip, "emulate")
    ip.run_line_magic("reload_ext", "balloonlab")
    assert lab.closed and magics_of(ip).lab is None
    assert "balloon" in ip.magics_manager.magics["line"] and "qmp" in ip.magics_manager.magics["cell"]
    ip.run_line_magic("load_ext", "balloonlab")  # already loaded: nothing changes
    assert list(ip.magics_manager.registry).count("BalloonMagics") == 1


def test_help_shows_the_usage_of_every_subcommand(ip, capsys):
    doc = ip.find_line_magic("balloon").__doc__
    for name in SUBCOMMANDS:
        assert f"%balloon {name}" in doc, name
    for option in ("--guest", "--memory", "--clock", "--qemu-version", "--id", "--paused", "--stop"):
        assert option in doc
    assert "%%qmp [-v] [-o NAME]" in ip.find_cell_magic("qmp").__doc__
    assert balloon(ip, "") is None
    assert "%balloon emulate" in capsys.readouterr().out
    balloon(ip, "target -h")
    out = capsys.readouterr().out
    assert out.startswith("::\n\n  %balloon target size") and "%balloon emulate" not in out
    balloon(ip, "help poll")
    assert "%balloon poll [interval]" in capsys.readouterr().out
    qmp(ip, "ignored", "-h")
    assert "%%qmp [-v] [-o NAME]" in capsys.readouterr().out


def test_a_comment_after_the_arguments_is_ignored(ip):
    lab = balloon(ip, "emulate --clock virtual  # time stands still until advanced")
    balloon(ip, "poll 2 # every two seconds")
    assert lab.polling_interval == 2
    with pytest.raises(UsageError, match="no such socket: /tmp/no#such"):
        balloon(ip, "connect /tmp/no#such")


def test_unknown_subcommand_and_unknown_option_are_usage_errors(ip):
    with pytest.raises(UsageError, match="unknown subcommand 'stat'; did you mean 'stats'"):
        balloon(ip, "stat")
    with pytest.raises(UsageError, match="unknown subcommand 'frobnicate'; choose one of: emulate"):
        balloon(ip, "frobnicate")
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        balloon(ip, "stats --bogus")


@pytest.mark.parametrize("line", ["poll", "poll 2", "stats", "watch", "panel", "target 256M", "info", "advance 1s"])
def test_every_subcommand_that_needs_a_lab_says_how_to_get_one(ip, line):
    with pytest.raises(UsageError) as info:
        balloon(ip, line)
    assert str(info.value) == f"%balloon {line.split()[0]}: {NO_LAB_HINT}"


def test_a_usage_error_is_one_line_without_traceback(ip, capsys):
    result = ip.run_cell("%balloon target 1.5Q")
    assert isinstance(result.error_in_exec, UsageError)
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "UsageError: %balloon target: not a size: '1.5Q' (write e.g. 256M, 1.5G or 268435456 bytes)"]
    assert "Traceback" not in captured.out + captured.err


# --------------------------------------------------------------------------------------------------------------
# starting, choosing and closing labs


def test_emulate_returns_the_lab_and_makes_it_current(ip):
    result = ip.run_cell("lab = %balloon emulate --guest linux --memory 1G --qemu-version 7.2 --id balloon0")
    result.raise_error()
    lab = ip.user_ns["lab"]
    assert isinstance(lab, balloonlab.Balloon) and magics_of(ip).lab is lab
    assert lab.backend == "emulated"
    assert lab.ram_size == 1024 * MiB
    assert lab.device_path == "/machine/peripheral/balloon0"
    assert lab.qemu_version.startswith("7.2")


def test_emulate_guest_kernel(ip):
    """A Linux 6.12 guest on QEMU 7.2: it sends 16 tags, QEMU 7.2 keeps the 10 it knows."""
    lab = balloon(ip, "emulate --qemu-version 7.2 --guest-kernel 6.12 --clock virtual")
    entries = lab.trace()["exchanges"][0]["entries"]
    assert len(entries) == 16 and sum(e["ignored"] for e in entries) == 6 and len(lab.stats()) == 10


def test_emulate_paused_starts_the_vm_paused(ip):
    lab = balloon(ip, "emulate --paused")
    assert lab.running is False


@pytest.mark.parametrize("line, message", [
    ("emulate --clock sundial", "argument --clock: invalid choice: 'sundial'"),
    ("emulate --guest plan9", "unknown guest model 'plan9'"),
    ("emulate --qemu-version 1.0", "unknown QEMU version '1.0'"),
    ("emulate --memory lots", "not a size: 'lots'"),
    ("emulate --guest-kernel 2.6", "unknown guest kernel '2.6'"),
    ("emulate --memory 0", "memory 0 is not a size: a guest needs more than 0 bytes (write e.g. 256M)"),
    ("emulate --memory 512", "memory 512 is 512 bytes, less than any guest can keep: did you mean '512M'?"),
    ("launch --memory lots", "not a size: 'lots'"),
    ("connect /nonexistent/qmp.sock", "no such socket: /nonexistent/qmp.sock"),
    ("use nothing_here", "no variable named 'nothing_here'"),
])
def test_bad_lab_options_are_usage_errors_and_start_nothing(ip, line, message):
    with pytest.raises(UsageError) as info:
        balloon(ip, line)
    assert message in str(info.value)
    assert magics_of(ip).lab is None


def test_a_new_lab_replaces_and_closes_the_previous_one_the_magics_made(ip):
    first = balloon(ip, "emulate")
    second = balloon(ip, "emulate --clock virtual")
    assert first.closed and not second.closed
    assert magics_of(ip).lab is second


def test_use_adopts_a_python_lab_which_the_magics_never_close(ip):
    mine = balloonlab.emulate()
    try:
        ip.user_ns["mine"] = mine
        ip.user_ns["not_a_lab"] = 42
        with pytest.raises(UsageError, match="not_a_lab is a int, not a balloonlab lab"):
            balloon(ip, "use not_a_lab")
        made = balloon(ip, "emulate")
        balloon(ip, "use mine")
        assert magics_of(ip).lab is mine and made.closed
        assert isinstance(balloon(ip, "stats"), GuestStats)
        ip.run_line_magic("unload_ext", "balloonlab")
        assert not mine.closed
        assert isinstance(mine.stats(), GuestStats)
    finally:
        mine.close()


def test_connect_to_a_running_emulator_by_its_socket(ip):
    server = balloonlab.emulate(id="balloon0")
    try:
        lab = balloon(ip, f"connect {server.socket_path}")
        assert lab.backend == "connected"
        assert lab.device_path == "/machine/peripheral/balloon0"
        balloon(ip, "poll 3")
        assert server.polling_interval == 3
        balloon(ip, "close")
        assert lab.closed and not server.closed
    finally:
        server.close()


def test_close_closes_the_current_lab_and_then_nothing_is_current(ip, capsys):
    lab = balloon(ip, "emulate")
    balloon(ip, "close")
    assert lab.closed and magics_of(ip).lab is None
    assert capsys.readouterr().out.startswith("closed emulated lab at ")
    balloon(ip, "close")
    assert capsys.readouterr().out == "no lab is open\n"
    with pytest.raises(UsageError, match="no lab yet"):
        balloon(ip, "stats")


# --------------------------------------------------------------------------------------------------------------
# polling, stats, target, info, advance


def test_poll_shows_and_sets_the_interval(ip, lab, capsys):
    shown = balloon(ip, "poll")
    assert shown == 0 and isinstance(shown, int)
    assert ip.display_formatter.format(shown)[0]["text/plain"] == "polling off (interval 0)"
    balloon(ip, "poll 2")
    assert lab.polling_interval == 2
    assert capsys.readouterr().out == "polling every 2 s\n"
    balloon(ip, "poll 30s")
    assert lab.polling_interval == 30
    balloon(ip, "poll 1m")
    assert lab.polling_interval == 60
    result = ip.run_cell("n = %balloon poll")
    result.raise_error()
    assert ip.user_ns["n"] == 60 and type(ip.user_ns["n"]) is not bool
    assert ip.display_formatter.format(ip.user_ns["n"])[0]["text/plain"] == "polling every 60 s (1 min)"
    balloon(ip, "poll 0")
    assert lab.polling_interval == 0


@pytest.mark.parametrize("value, message", [
    ("-1", "%balloon poll: the interval cannot be negative: '-1' (0 turns polling off)"),
    ("1.5", "QEMU polls in whole seconds: '1.5'"),
    ("500ms", "QEMU polls in whole seconds"),
    ("4294967296", "QEMU's interval is at most 4294967295 s"),
    ("often", "not an interval: 'often'"),
])
def test_a_bad_interval_is_refused_before_anything_is_sent(ip, lab, value, message):
    balloon(ip, "poll 5")
    with pytest.raises(UsageError) as info:
        balloon(ip, f"poll {value}")
    assert message in str(info.value)
    assert lab.polling_interval == 5


def test_stats_returns_guest_stats_for_assignment(ip, booted_lab):
    result = ip.run_cell("s = %balloon stats")
    result.raise_error()
    s = ip.user_ns["s"]
    assert isinstance(s, GuestStats)
    assert s["total-memory"] > 0 and s["free-memory"] <= s["total-memory"]
    assert s.last_update is not None  # the linux guest reports once when its driver loads


def test_stats_renders_as_html_in_notebooks_and_as_aligned_text_in_a_terminal(ip, lab):
    s = balloon(ip, "stats")
    data, _ = ip.display_formatter.format(s)
    assert "<table" in data["text/html"] and "free-memory" in data["text/html"]
    lines = data["text/plain"].splitlines()
    assert lines[0].split()[:2] == ["stat", "value"] and any(line.startswith("free-memory") for line in lines)


def test_target_asks_the_guest_and_actual_follows(ip, lab, capsys):
    balloon(ip, "target 256M")
    assert capsys.readouterr().out.startswith("target 256.0 MiB sent (actual now ")
    wait_for(lambda: lab.actual == 256 * MiB, "the guest to balloon down to 256 MiB")
    balloon(ip, "target 268435456")
    balloon(ip, "target 0.5G")
    wait_for(lambda: lab.actual == 512 * MiB, "the guest to give the memory back")
    balloon(ip, "target 2G")
    assert "above RAM, so QEMU asks for the full 512.0 MiB" in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ("0", "%balloon target: target 0 is not a size: a guest needs more than 0 bytes (write e.g. 256M)"),
    ("-5", "%balloon target: target -5 is negative"),
    ("512", "%balloon target: target 512 is 512 bytes, less than any guest can keep: did you mean '512M'?"),
    ("lots", "not a size: 'lots'"),
    ("1.5Q", "not a size: '1.5Q'"),
    ("0.3", "not a whole number of bytes"),
])
def test_a_bad_target_is_refused_before_anything_is_sent(ip, lab, value, message):
    events_before = len(lab.events)
    with pytest.raises(UsageError) as info:
        balloon(ip, f"target {value}")
    assert message in str(info.value)
    assert lab.actual == 512 * MiB
    assert len(lab.events) == events_before


def test_info_returns_a_value_with_a_text_and_an_html_form(ip, lab):
    info = balloon(ip, "info")
    assert isinstance(info, LabInfo)
    assert (info.backend, info.socket_path, info.device_path) == ("emulated", lab.socket_path, DOC_PATH)
    assert info.actual == info.ram_size == 512 * MiB
    assert info.polling_interval == 0 and info.verdict == "polling-off"
    data, _ = ip.display_formatter.format(info)
    assert data["text/plain"].splitlines()[0] == "backend  emulated"
    assert f"socket   {lab.socket_path}" in data["text/plain"]
    assert "polling-off" in data["text/html"]


def test_advance_runs_the_virtual_clock(ip, vlab, capsys):
    balloon(ip, "poll 2")
    before = balloon(ip, "stats").last_update_seconds
    balloon(ip, "advance 1m")
    assert capsys.readouterr().out.endswith("advanced 1 min\n")
    after = balloon(ip, "stats").last_update_seconds
    assert after >= before + 58  # last-update follows the (virtual) host clock the emulator keeps


def test_advance_on_a_real_clock_or_with_a_bad_duration_is_a_usage_error(ip, lab):
    with pytest.raises(UsageError) as info:
        balloon(ip, "advance 30s")
    assert str(info.value) == ("%balloon advance: this emulated lab runs on the real clock (start one with "
                               "%balloon emulate --clock virtual)")
    with pytest.raises(UsageError) as info:
        balloon(ip, "advance soon")
    assert str(info.value) == "%balloon advance: not a duration: 'soon' (write e.g. 30s, 1.5m, 24h, 1h30m)"


def test_argparse_errors_have_the_one_magic_error_form(ip, lab):
    with pytest.raises(UsageError) as info:
        balloon(ip, "advance")
    assert str(info.value) == ("%balloon advance: the following arguments are required: duration "
                               "(%balloon advance -h shows its usage)")


def test_use_says_what_it_did_and_close_closes_the_adopted_lab(ip, capsys):
    mine = balloonlab.emulate()
    try:
        ip.user_ns["mine"] = mine
        balloon(ip, "use mine")
        out = capsys.readouterr().out
        assert out.startswith(f"using mine: emulated lab at {mine.socket_path}") and "%balloon close closes it" in out
        assert "%balloon close closes it" in SUBCOMMANDS["use"].summary
        balloon(ip, "close")
        assert mine.closed
    finally:
        mine.close()


def test_panel_in_terminal_ipython_says_it_needs_jupyter(ip, lab):
    with pytest.raises(UsageError) as info:
        balloon(ip, "panel")
    assert str(info.value).startswith("%balloon panel: the panel is a widget and needs Jupyter")
    assert magics_of(ip).panels == []


# --------------------------------------------------------------------------------------------------------------
# watch, panel


def latest_watch_output(outputs: list[dict], display_id: str) -> dict:
    mine = [o for o in outputs if (o.get("transient") or {}).get("display_id") == display_id]
    return mine[-1]


def test_watch_displays_at_once_and_updates_its_display_on_new_reports(ip, vlab):
    balloon(ip, "poll 1")
    with capture_output() as cap:
        published = ip.display_pub.outputs  # IPython's CapturingDisplayPublisher: what a kernel would send
        assert balloon(ip, "watch") is None
        [watch] = magics_of(ip).watches
        assert published[0]["update"] is False and published[0]["transient"] == {"display_id": watch.display_id}
        assert "watching (live)" in published[0]["data"]["text/plain"]
        for _ in range(3):
            balloon(ip, "advance 5s")
        wait_for(lambda: watch.reports >= 1 and watch.published >= 1, "the watch to publish an update")
        wait_for(lambda: latest_watch_output(published, watch.display_id)["data"]["text/plain"]
                 == ip.display_formatter.format(watch.view())[0]["text/plain"], "the last state to be published")
        last = latest_watch_output(published, watch.display_id)
        assert last["update"] is True
        assert f"data-reports='{watch.reports}'" in last["data"]["text/html"]
        assert "free-memory" in last["data"]["text/plain"]
        stdout_during_updates = cap.stdout
    assert stdout_during_updates == "advanced 5 s\n" * 3  # only the cell's own lines: nothing from the background


def test_several_watches_and_stop_stops_them_all(ip, vlab, capsys):
    with capture_output() as cap:
        balloon(ip, "watch")
        balloon(ip, "watch")
    watches = list(magics_of(ip).watches)
    assert len(watches) == 2 and len({w.display_id for w in watches}) == 2
    balloon(ip, "watch --stop")
    assert capsys.readouterr().out == "stopped 2 watches\n"
    assert not any(w.active for w in watches)
    assert magics_of(ip).watches == []
    balloon(ip, "watch --stop")
    assert capsys.readouterr().out.startswith("no watch is running")
    del cap


def test_watch_in_a_terminal_shows_a_snapshot_and_never_prints_later(ip, vlab, capsys):
    balloon(ip, "poll 1")
    balloon(ip, "watch")
    out = capsys.readouterr().out
    assert "watching (snapshot)" in out and "live updates need a Jupyter front end" in out
    assert magics_of(ip).watches == []
    balloon(ip, "advance 10s")
    assert "watching" not in capsys.readouterr().out


def test_closing_the_lab_stops_its_watches(ip, vlab):
    with capture_output():
        balloon(ip, "watch")
    [watch] = magics_of(ip).watches
    balloon(ip, "close")
    assert not watch.active and watch.view().state == "stopped"


def test_a_watch_whose_qemu_goes_away_says_so_and_stops(ip, vlab, capsys):
    with capture_output():
        published = ip.display_pub.outputs
        balloon(ip, "watch")
        [watch] = magics_of(ip).watches
        qmp(ip, "quit")
        wait_for(lambda: "watching (disconnected)" in latest_watch_output(published, watch.display_id)["data"][
            "text/plain"], "the watch to show that QEMU is gone")
        last = latest_watch_output(published, watch.display_id)
    assert watch.view().state == "disconnected" and not watch.active
    assert "watching (disconnected)" in last["data"]["text/plain"] and "QEMU went away" in last["data"]["text/plain"]


def test_panel_returns_the_widget_panel_for_the_current_lab(ip, lab):
    from balloonlab import widgets

    with capture_output():  # a display publisher that renders widgets, as a kernel's
        panel = balloon(ip, "panel")
    try:
        assert isinstance(panel, widgets.BalloonPanel)
        assert panel.lab is lab
        ip.run_line_magic("unload_ext", "balloonlab")
        assert panel.closed and lab.closed
    finally:
        panel.close()


def test_close_freezes_the_panel_with_its_last_numbers(ip, lab, capsys):
    with capture_output():
        panel = balloon(ip, "panel")
    try:
        free = panel.stats_table.value
        balloon(ip, "close")
        assert lab.closed and panel.frozen and not panel.closed and not panel._pump.alive
        assert panel.status.startswith("closed: the lab was closed (%balloon close)")
        assert panel.interval_slider.disabled and panel.target_slider.disabled
        assert panel.stats_table.value == free and "free-memory" in free
        assert panel.interval_slider.comm is not None  # its widgets are still there to be shown
    finally:
        panel.close()
    assert panel.closed


def test_running_panel_again_closes_the_previous_panel_of_that_lab(ip, lab):
    from balloonlab import widgets

    with capture_output():
        first = balloon(ip, "panel")
        second = balloon(ip, "panel")  # the cell run again
    try:
        assert isinstance(second, widgets.BalloonPanel) and not second.closed
        assert first.closed and not first._pump.alive  # its thread is gone, not piling up
        assert magics_of(ip).panels == [second]
    finally:
        first.close()
        second.close()


def test_a_new_lab_freezes_the_panels_of_the_lab_it_replaces(ip, lab):
    with capture_output():
        panel = balloon(ip, "panel")
    try:
        second_lab = balloon(ip, "emulate --clock virtual")  # replaces (and closes) the lab the magics made
        assert lab.closed and second_lab is not lab
        assert panel.frozen and not panel._pump.alive  # no thread left ticking for a closed lab
        assert "%balloon started another one" in panel.status
        assert magics_of(ip).panels == []
    finally:
        panel.close()


def test_watch_status_counts_refreshes_not_guest_reports():
    from balloonlab.magics.watch import StatsView

    one = StatsView(None, interval=1, actual=None, reports=1, state="live").headline()
    assert "refreshed 1 time since the watch started" in one
    assert "report" not in one and "update" not in one  # it cannot know how many reports the guest made
    assert "refreshed 10 times" in StatsView(None, interval=1, actual=None, reports=10, state="live").headline()


# --------------------------------------------------------------------------------------------------------------
# %%qmp


def run_doc_examples(ip: InteractiveShell, capsys: pytest.CaptureFixture, examples: tuple[str, ...]) -> list[Any]:
    """Run the doc's examples one ``%%qmp`` cell each and check the replies every QEMU gives them (two empty
    returns; the "Disable" example's misspelt property: QEMU's own error, shown on stderr, not raised); return
    the replies printed on stdout, for the guest-stats reply, which depends on the guest."""
    for example in examples:
        qmp(ip, example)
    captured = capsys.readouterr()
    out, err = json_values(captured.out), json_values(captured.err)
    assert out[:2] == [{"return": {}}, {"return": {}}]
    assert err == [{"error": DISABLE_ERROR}]
    return out


@pytest.mark.parametrize("examples", [RST_EXAMPLES, TXT_EXAMPLES], ids=["rst", "txt"])
def test_the_stats_docs_examples_verbatim_get_qemus_answers(ip, booted_lab, capsys, examples):
    lab = booted_lab
    out = run_doc_examples(ip, capsys, examples)
    stats_reply = out[2]["return"]
    assert set(stats_reply) == {"stats", "last-update"}
    assert len(stats_reply["stats"]) == 16 and stats_reply["last-update"] > 0
    assert stats_reply["stats"]["stat-total-memory"] <= 512 * MiB
    assert len(out) == 3
    assert lab.polling_interval == 10  # so polling was never disabled


def test_all_four_doc_examples_in_one_cell_and_the_replies_in_a_variable(ip, lab, capsys):
    qmp(ip, "\n".join(RST_EXAMPLES), "-o replies")
    replies = ip.user_ns["replies"]
    assert [list(r) for r in replies] == [["return"], ["return"], ["return"], ["error"]]
    assert replies[3]["error"] == DISABLE_ERROR
    assert capsys.readouterr().err.count("GenericError") == 1


def test_qmp_shell_form_and_ids_are_echoed_like_qemu(ip, lab, capsys):
    qmp(ip, f"""
qom-set path={DOC_PATH} property=guest-stats-polling-interval value=3
{{"execute": "qom-get", "arguments": {{"path": "{DOC_PATH}", "property": "guest-stats-polling-interval"}},
  "id": {{"tag": [1, "x"]}}}}
""")
    out = json_values(capsys.readouterr().out)
    assert out == [{"return": {}}, {"return": 3, "id": {"tag": [1, "x"]}}]


def test_an_error_reply_is_shown_not_raised_and_the_next_command_still_runs(ip, lab, capsys):
    qmp(ip, f"""
qom-set path={DOC_PATH} property=guest-stats-polling-interval value=-1
no-such-command
qom-set path={DOC_PATH} property=guest-stats-polling-interval value=4
""")
    captured = capsys.readouterr()
    assert json_values(captured.err) == [
        {"error": {"class": "GenericError", "desc": "timer value must be greater than zero"}},
        {"error": {"class": "CommandNotFound", "desc": "The command no-such-command has not been found"}},
    ]
    assert json_values(captured.out) == [{"return": {}}]
    assert lab.polling_interval == 4


def test_events_that_arrive_meanwhile_are_shown(ip, lab, capsys):
    qmp(ip, "stop\ncont\nquery-status\n")
    out = capsys.readouterr().out
    shown = json_values(out)
    assert [json.loads(line)["event"] for line in out.splitlines() if '"event"' in line] == ["STOP", "RESUME"]
    names = [m.get("event") for m in shown if "event" in m]
    assert names == ["STOP", "RESUME"]
    stop_event = next(m for m in shown if m.get("event") == "STOP")
    assert set(stop_event) >= {"timestamp", "event"} and set(stop_event["timestamp"]) == {"seconds", "microseconds"}
    assert shown[-1] == {"return": {"status": "running", "running": True}}


def test_verbose_writes_a_transcript_that_qmp_reads_back(ip, lab, capsys):
    qmp(ip, "query-balloon", "-v")
    transcript = capsys.readouterr().out
    assert transcript.splitlines() == ['-> {"execute": "query-balloon"}', f'<- {{"return": {{"actual": {512 * MiB}}}}}']
    qmp(ip, transcript)
    assert json_values(capsys.readouterr().out) == [{"return": {"actual": 512 * MiB}}]


@pytest.mark.parametrize("cell, message", [
    ('{"execute": "qom-set", "arguments": {"path": "P", "property": "guest-stats-polling-interval", "value": 5}}\n'
     '{"execute": "qom-get", "arguments": {"path": "P",}}', "line 3: JSON parse error"),
    ("qom-set path=P property=guest-stats-polling-interval value=5\n{'execute': 'stop',}", "line 3: JSON parse error"),
    ("qom-set path=P property=guest-stats-polling-interval value=5\n{\"exec\": \"stop\"}",
     "line 3: QMP input member 'exec' is unexpected"),
    ("qom-set path=P property=guest-stats-polling-interval value=5\nEnable polling:", "line 3: expected a key=value"),
    ("# only a comment\n", "no command in the cell"),
    ('{ "return": {} }', "no command in the cell"),
])
def test_malformed_cells_send_nothing(ip, lab, cell, message):
    cell = cell.replace("path=P", f"path={DOC_PATH}").replace('"P"', json.dumps(DOC_PATH))
    with pytest.raises(UsageError) as info:
        qmp(ip, cell)
    assert message in str(info.value)
    assert lab.polling_interval == 0


def test_qmp_without_a_lab_and_with_a_bad_output_name(ip):
    with pytest.raises(UsageError, match="no lab yet"):
        qmp(ip, "query-status")
    balloon(ip, "emulate")
    with pytest.raises(UsageError, match="is not a variable name"):
        qmp(ip, "query-status", "-o 1x")


def test_qmp_is_not_variable_expanded(ip, lab, capsys):
    ip.user_ns["path"] = "/nope"
    qmp(ip, '{"execute": "qom-get", "arguments": {"path": "$path", "property": "type"}}')
    assert json_values(capsys.readouterr().err) == [
        {"error": {"class": "DeviceNotFound", "desc": "Device '$path' not found"}}]


# --------------------------------------------------------------------------------------------------------------
# a dead QEMU


def test_a_dead_qemu_gives_one_line(ip, lab, capsys):
    qmp(ip, "quit")
    assert json_values(capsys.readouterr().out)[0] == {"return": {}}
    _loop.run(lab.emulator.wait_closed(), 10)
    for source, where in (("%balloon stats", "%balloon stats"), ("%balloon poll 2", "%balloon poll"),
                          ("%%qmp\nquery-status", "%%qmp")):
        wait_for(lambda: not lab.connected, "the client to notice QEMU is gone")
        result = ip.run_cell(source)
        assert isinstance(result.error_in_exec, balloonlab.BalloonDisconnectedError), source
        captured = capsys.readouterr()
        text = (captured.out + captured.err).strip()
        assert len(text.splitlines()) == 1 and text.startswith(f"{where}: lost the QMP connection"), text


# --------------------------------------------------------------------------------------------------------------
# a real QEMU


@pytest.mark.qemu
def test_the_docs_examples_verbatim_against_a_real_qemu(ip, start_vm, capsys):
    """Real qemu-system-x86_64 (no guest kernel), with one anonymous device before the balloon so that the
    balloon sits at ``/machine/peripheral-anon/device[1]``, the doc's path: the examples run unchanged."""
    vm = start_vm(guest=False, balloon_id=None,
                  extra_args=["-device", "virtio-rng-pci", "-device", "virtio-balloon-pci"])
    lab = balloon(ip, f"connect {vm.qmp_socket}")
    assert lab.backend == "connected" and lab.device_path == DOC_PATH
    out = run_doc_examples(ip, capsys, RST_EXAMPLES)
    no_guest = out[2]["return"]
    assert no_guest["last-update"] == 0 and set(no_guest["stats"].values()) == {2**64 - 1}
    assert lab.polling_interval == 10
    with pytest.raises(UsageError, match="the interval cannot be negative"):
        balloon(ip, "poll -1")
    assert lab.polling_interval == 10
    balloon(ip, "close")
    assert lab.closed and vm.alive  # the magics connected to it, they did not start it


@pytest.mark.qemu
def test_launch_starts_a_live_qemu_that_close_stops(ip, qemu_binary):
    lab = balloon(ip, "launch --no-guest --memory 256M --id b1")
    vm = lab.vm
    try:
        assert lab.backend == "live" and lab.device_path == "/machine/peripheral/b1"
        assert lab.ram_size == 256 * MiB and vm.alive
        info = balloon(ip, "info")
        assert info.verdict == "polling-off" and info.backend == "live"
        with pytest.raises(UsageError, match="this lab is live; only an emulated lab has a virtual clock"):
            balloon(ip, "advance 1s")
        balloon(ip, "close")
        assert lab.closed and not vm.alive
    finally:
        lab.close()


def test_the_lab_loop_never_publishes_a_watch_update(ip, vlab):
    """ipykernel's publish flushes stdout/stderr and may wait on its IO thread: never on the loop every lab's QMP
    traffic and the in-process emulators run on.  The watch's own thread publishes."""
    balloon(ip, "poll 1")
    threads: list[str] = []
    with capture_output():
        publish = ip.display_pub.publish

        def recording_publish(*args: Any, **kwargs: Any) -> None:
            threads.append("loop" if _loop.in_loop_thread() else threading.current_thread().name)
            publish(*args, **kwargs)

        ip.display_pub.publish = recording_publish
        balloon(ip, "watch")
        [watch] = magics_of(ip).watches
        for _ in range(5):
            balloon(ip, "advance 3s")  # bursts: some reports within MIN_UPDATE_GAP of the last publish
        wait_for(lambda: watch.reports >= 5 and watch.published >= 1, "the watch to publish updates")
        balloon(ip, "watch --stop")
    assert "loop" not in threads and "balloonlab-watch" in threads


class ReportArrivesDuringTheReads:
    """The real lab, except that a new report arrives while the watch reads its initial state (between its
    stats and actual reads): the race a watch that subscribed only after reading would lose."""

    def __init__(self, lab: Any) -> None:
        self._lab = lab

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lab, name)

    @property
    def actual(self) -> int:
        self._lab.advance("2s")
        return self._lab.actual


def test_a_report_that_arrives_while_the_watch_starts_is_not_lost(ip, vlab):
    from balloonlab.magics.watch import StatsWatch

    balloon(ip, "poll 1")
    already = vlab.subscribe(lambda update: None)  # the lab's watcher already runs (e.g. for a panel)
    try:
        with capture_output():
            watch = StatsWatch(ReportArrivesDuringTheReads(vlab), ip).start()
            try:
                wait_for(lambda: watch.reports >= 1, "the watch to show the report that came during its start")
                wait_for(lambda: watch.view().stats == vlab.last_stats, "the watch to show the newest report")
            finally:
                watch.stop()
    finally:
        already()
