"""The benchmark runner runs and emits every figure (``benchmarks/run.py --quick``).  Never looks at the values:
timings belong in docs/benchmarks.md, not in assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "run.py"


def expected_keys() -> set[str]:
    sys.path.insert(0, str(RUNNER.parent))
    try:
        import run  # benchmarks/run.py

        return {key for keys in run.KEYS.values() for key in keys} | {"calibration_ms"}
    finally:
        sys.path.remove(str(RUNNER.parent))
        sys.modules.pop("run", None)


@pytest.mark.slow
def test_quick_run_emits_every_key(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(RUNNER), "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == expected_keys()
    assert {"nproc", "cpu", "qemu", "python"} <= set(doc["machine"])
    failed = {k: v["note"] for k, v in doc["results"].items() if v["note"].startswith("failed")}
    assert failed == {}, failed
    for key in doc["results"]:
        assert key in proc.stdout, f"{key} missing from the printed table"
