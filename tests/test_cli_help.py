"""``balloonlab --help`` names every command and every ``guest`` verb the guest command accepts."""

from __future__ import annotations

import re

import pytest

from balloonlab import cli
from balloonlab.cli import guest


def test_top_level_help_lists_every_guest_verb(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        guest.main(["--help"])
    assert done.value.code == 0
    verbs = re.search(r"\{([a-z,]+)\}", capsys.readouterr().out)
    assert verbs is not None
    assert cli.main(["--help"]) == 0
    top = capsys.readouterr().out
    for verb in verbs.group(1).split(","):
        assert re.search(rf"^\s+guest {verb}\s", top, re.M), f"balloonlab --help does not list 'guest {verb}'"
    for command in ("emulate", "guest", "launch", "lab", "record"):
        assert re.search(rf"^  {command}\s", top, re.M)
