"""The package type-checks and lints clean, with the rules pyproject.toml sets (mypy and ruff run as tests, as
qemu.qmp runs its linters, so the README's one test command checks them too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_finds_no_type_errors_in_the_package() -> None:
    result = _run("mypy")
    assert result.returncode == 0, f"mypy found type errors:\n{result.stdout}{result.stderr}"


def test_ruff_finds_nothing_in_the_package_its_tests_benchmarks_tools_and_notebooks() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, f"ruff found problems:\n{result.stdout}{result.stderr}"
