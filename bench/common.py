"""Shared bench helpers: quick mode, cache/result directories, timing, subprocess measurement."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def quick() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


KEEP_INPUTS = 8  # generated inputs kept in the cache (BENCH_KEEP_INPUTS): the newest used


def cache_dir() -> Path:
    """Generated inputs are large: kept outside the tree and reused between runs. Disk stays
    bounded: beyond the newest BENCH_KEEP_INPUTS files (by last use, see `used`), the oldest go."""
    path = Path(os.environ.get("BENCH_CACHE_DIR", "/tmp/oasis-ops-bench"))
    path.mkdir(parents=True, exist_ok=True)
    keep = int(os.environ.get("BENCH_KEEP_INPUTS", KEEP_INPUTS))
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.is_symlink()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
    return path


def used(path: Path) -> Path:
    """Mark a cached input as just used (its mtime), so pruning keeps it."""
    os.utime(path)
    return path


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_child(module: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    """Run `python -m module args...` in a fresh process (its own peak RSS); it prints one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    results = Path(os.environ.get("BENCH_RESULTS_DIR", str(RESULTS)))
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
