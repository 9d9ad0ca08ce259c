"""`python -m bench rollup` runs end to end at quick sizes (BENCH_QUICK=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_rollup_quick_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_QUICK": "1", "BENCH_CACHE_DIR": str(tmp_path / "cache"),
           "BENCH_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run([sys.executable, "-m", "bench", "rollup"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "last 6h" in proc.stdout and "pandas" in proc.stdout and "100,000" in proc.stdout
    assert (tmp_path / "results" / "bench_rollup_quick.json").is_file()
    unknown = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2 and "unknown benchmark" in unknown.stderr
