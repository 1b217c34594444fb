"""One rule for values: the Python API, the ``%balloon`` magics and the command line accept the same spellings and
refuse the same things with the same words (units.py), before anything is sent."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import balloonlab
from balloonlab import InvalidValueError, LaunchError
from balloonlab.cli import emulate as emulate_cli
from balloonlab.cli import launch as launch_cli
from balloonlab.units import MIN_GUEST_MEMORY, parse_guest_size, parse_interval

MiB = 1 << 20

BAD_TARGETS = [0, "0", -5, "-5", "-1G", 512, "512", "1M", "lots", "1.5Q", "0.3", True]
BAD_INTERVALS = ["1.5", "500ms", "often", "-1", "-2s", "4294967296", "1h0.5s"]
BAD_MEMORY = ["0", "lots", "-5M", "1M", "12K", "0.3"]


@pytest.fixture(scope="module")
def lab() -> Iterator[balloonlab.Balloon]:
    with balloonlab.emulate(clock="virtual") as lab:
        yield lab


@pytest.fixture()
def ip(lab: balloonlab.Balloon) -> Iterator[InteractiveShell]:
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "balloonlab")
    shell.user_ns["lab"] = lab
    shell.run_line_magic("balloon", "use lab")
    yield shell
    magics = shell.magics_manager.registry["BalloonMagics"]
    magics.lab = None  # the module's lab outlives this shell: unloading must not close it
    shell.run_line_magic("unload_ext", "balloonlab")
    InteractiveShell.clear_instance()


def api_words(call: Any) -> str:
    with pytest.raises(InvalidValueError) as info:
        call()
    assert isinstance(info.value, ValueError)  # code that catches ValueError keeps working
    return str(info.value)


def magic_words(ip: InteractiveShell, line: str) -> str:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("balloon", line)
    return str(info.value)


@pytest.mark.parametrize("value", BAD_TARGETS, ids=repr)
def test_a_bad_target_is_refused_with_the_same_words_by_api_and_magic(ip, lab, value):
    before = (lab.actual, len(lab.events), lab.target)
    words = api_words(lambda: lab.set_target(value))
    if not isinstance(value, bool):
        # "--" ends the options, as in any argparse command line, so "-1G" is the value, not an option
        assert magic_words(ip, f"target -- {value}") == f"%balloon target: {words}"
    assert (lab.actual, len(lab.events), lab.target) == before  # nothing was sent


def test_a_bare_number_is_bytes_and_a_tiny_one_gets_a_hint(lab):
    assert api_words(lambda: lab.set_target(512)) == (
        "target 512 is 512 bytes, less than any guest can keep: did you mean '512M'? (a bare number is bytes; "
        "write e.g. 512M)")
    assert api_words(lambda: lab.set_target(0)) == api_words(lambda: lab.set_target("0")) == (
        "target 0 is not a size: a guest needs more than 0 bytes (write e.g. 256M)")
    lab.set_target(lab.actual // 2)  # bytes in, bytes out
    assert lab.target == 256 * MiB
    lab.set_target("512M")


def test_raw_qmp_still_sends_exactly_what_it_is_given(lab):
    with pytest.raises(balloonlab.QMPError) as info:
        lab.qmp("balloon", value=0)
    assert info.value.desc == "Parameter 'value' expects a size"
    with pytest.raises(balloonlab.QMPError) as info:
        lab.qmp("qom-set", path=lab.device_path, property="guest-stats-polling-interval", value=1.5)
    assert info.value.desc == "Invalid parameter type for 'guest-stats-polling-interval', expected: integer"


@pytest.mark.parametrize("value", BAD_INTERVALS)
def test_a_bad_interval_is_refused_with_the_same_words_by_api_and_magic(ip, lab, value):
    lab.polling_interval = 5
    words = api_words(lambda: setattr(lab, "polling_interval", value))
    assert value in words
    assert magic_words(ip, f"poll -- {value}") == f"%balloon poll: {words}"
    assert lab.polling_interval == 5


@pytest.mark.parametrize("value", [1.5, True, None, float("nan")], ids=repr)
def test_a_fractional_or_non_numeric_interval_from_python_names_the_value(lab, value):
    lab.polling_interval = 5
    assert repr(value) in api_words(lambda: setattr(lab, "polling_interval", value))
    assert lab.polling_interval == 5


@pytest.mark.parametrize("spelling, seconds", [("30s", 30), ("2", 2), (2, 2), ("1m", 60), (3.0, 3), ("0", 0)])
def test_the_interval_takes_the_spellings_of_the_magic(ip, lab, spelling, seconds):
    lab.polling_interval = spelling
    assert lab.polling_interval == seconds
    ip.run_line_magic("balloon", "poll 7")
    ip.run_line_magic("balloon", f"poll {spelling}")
    assert lab.polling_interval == seconds


@pytest.mark.parametrize("value", BAD_MEMORY)
def test_a_bad_memory_size_is_refused_with_the_same_words_everywhere(ip, value, capsys):
    words = api_words(lambda: parse_guest_size(value, "memory"))
    with pytest.raises(InvalidValueError) as info:
        balloonlab.emulate(memory=value)
    assert str(info.value) == words
    assert magic_words(ip, f"emulate --memory={value}") == f"%balloon emulate: {words}"
    with pytest.raises(LaunchError) as launch_info:
        balloonlab.launch(memory=value)  # refused before any QEMU starts
    assert str(launch_info.value) == words
    # qemu-system's -m reads a bare number as MiB; every size with a unit means the same as above
    if value in ("0", "lots", "-5M", "1M", "12K"):
        with pytest.raises(balloonlab.EmulatorOptionError) as cli_info:
            emulate_cli.parse_memory(value)
        assert str(cli_info.value) == f"-m {value}: {words}"
        assert launch_cli.main(["--no-guest", f"--memory={value}"]) == 1
        assert capsys.readouterr().err == f"balloonlab launch: {words}\n"


def test_memory_bare_number_rule_api_bytes_command_line_mib():
    assert "did you mean '512M'?" in api_words(lambda: balloonlab.emulate(memory=512))
    assert emulate_cli.parse_memory("512") == 512 * MiB  # qemu-system's -m 512
    assert parse_guest_size(512 * MiB, "memory") == 512 * MiB


def test_the_floor_is_what_no_guest_can_keep():
    assert parse_guest_size(MIN_GUEST_MEMORY) == MIN_GUEST_MEMORY
    assert "less than any guest can keep" in api_words(lambda: parse_guest_size(MIN_GUEST_MEMORY - 1))
    assert parse_interval("4294967295") == 2**32 - 1


@pytest.mark.parametrize("value", ["1.5", "often", "4294967296"])
def test_balloonlab_record_refuses_a_bad_interval_in_the_same_words(value, capsys):
    from balloonlab.cli import record

    words = api_words(lambda: parse_interval(value))
    with pytest.raises(SystemExit):
        record.main(["/nonexistent.sock", "-o", "/nonexistent.blab", "--interval", value])
    assert words in capsys.readouterr().err
