"""Errors that name the real cause and the fix that fits this lab: ``advance()`` on a real-clock emulator says
how to get a virtual clock the way this lab was made (an argument in this process, an option for a socket)."""

from __future__ import annotations

from typing import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import balloonlab
from balloonlab import VirtualClockRequiredError
from tests.helpers import emulate_command


@pytest.fixture()
def emulate_socket() -> Iterator[str]:
    """``balloonlab emulate`` (real clock) in a subprocess; its QMP socket."""
    with emulate_command() as path:
        yield path


def test_advance_on_a_socket_lab_names_the_command_line_option(emulate_socket):
    with balloonlab.connect(emulate_socket) as lab, pytest.raises(VirtualClockRequiredError) as info:
        lab.advance("30s")
    text = str(info.value)
    assert "--clock virtual" in text and "emulate(clock='virtual')" not in text, text


def test_advance_on_an_in_process_lab_names_the_argument():
    with balloonlab.emulate() as lab, pytest.raises(VirtualClockRequiredError) as info:
        lab.advance("30s")
    assert "balloonlab.emulate(clock='virtual')" in str(info.value)


def test_magic_advance_on_a_socket_lab_says_how_to_get_a_virtual_clock(emulate_socket):
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    try:
        ip.run_line_magic("load_ext", "balloonlab")
        ip.run_line_magic("balloon", f"connect {emulate_socket}")
        with pytest.raises(UsageError) as info:
            ip.run_line_magic("balloon", "advance 1s")
        assert str(info.value) == ("%balloon advance: this lab is connected; only an emulated lab has a virtual "
                                   "clock (run `balloonlab emulate --clock virtual` and connect to it, or use "
                                   "%balloon emulate --clock virtual)")
    finally:
        ip.run_line_magic("unload_ext", "balloonlab")
        InteractiveShell.clear_instance()


def test_magic_advance_works_on_a_virtual_clock_socket():
    """A socket lab whose emulator runs on a virtual clock can be advanced: %balloon advance drives it."""
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    with balloonlab.emulate(clock="virtual") as owner:
        try:
            ip.run_line_magic("load_ext", "balloonlab")
            lab = ip.run_line_magic("balloon", f"connect {owner.socket_path}")
            assert lab.backend == "connected"
            before = owner.emulator_state()["vm-clock-ns"]
            ip.run_line_magic("balloon", "advance 5s")
            assert owner.emulator_state()["vm-clock-ns"] == before + 5 * 10**9
        finally:
            ip.run_line_magic("unload_ext", "balloonlab")
            InteractiveShell.clear_instance()
