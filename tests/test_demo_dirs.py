"""Disk is bounded too: `oasis-ops demo` keeps the newest `keep_demo_dirs` automatic demo
directories and removes older ones, never the current one or one a running demo writes to."""

from __future__ import annotations

import os
import time
from pathlib import Path

from oasis_ops.demo.world import IN_USE_S, prune_demo_dirs


def _demo(base: Path, stamp: str, age_s: float, now: float) -> Path:
    d = base / f"demo-{stamp}"
    (d / "ollama").mkdir(parents=True)
    f = d / "ollama" / "server.log"
    f.write_text("x")
    for p in (f, d / "ollama", d):
        os.utime(p, (now - age_s, now - age_s))
    return d


def test_only_the_newest_are_kept_and_a_dir_in_use_is_never_removed(tmp_path: Path) -> None:
    now = time.time()
    old = [_demo(tmp_path, f"2026120{i}-120000", 86_400 * (9 - i), now) for i in range(1, 6)]  # 1 (oldest) .. 5
    in_use = _demo(tmp_path, "20261130-120000", IN_USE_S / 10, now)  # oldest name, written a minute ago
    current = _demo(tmp_path, "20261204-083000", 0, now)
    other = tmp_path / "logs"
    other.mkdir()
    removed = prune_demo_dirs(tmp_path, 3, current=current, now=now)
    assert sorted(p.name for p in removed) == [p.name for p in old[:3]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["logs", current.name, old[4].name, old[3].name, in_use.name])
    assert prune_demo_dirs(tmp_path, 0, current=current, now=now) == []  # 0 keeps all


def test_a_symlinked_or_missing_base_is_left_alone(tmp_path: Path) -> None:
    assert prune_demo_dirs(tmp_path / "absent", 1) == []
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    base = tmp_path / "cache"
    base.mkdir()
    (base / "demo-20200101-000000").symlink_to(target)
    assert prune_demo_dirs(base, 1, now=time.time() + 10 * IN_USE_S) == []
    assert (target / "keep.txt").exists()
