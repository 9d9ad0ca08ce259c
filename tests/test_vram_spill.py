"""`vram_spill` needs a placement signal (the model's GPU share fell, or a GPU's memory was full) AND
a consequence (generation slowed, or the runner's CPU rose): each alone is no finding. Built on
the "vram" scenario of tests/helpers_scenarios.py (an NVIDIA GPU filling up mid-run), then with
one side of the evidence taken out of the sidecar."""

from __future__ import annotations

from pathlib import Path

import duckdb
from helpers_scenarios import build_scenario

from oasis_ops.diagnosis.incidents import analyze
from oasis_ops.settings import load_settings


def findings(tmp_path: Path, *edits: str) -> list[str]:
    scen = build_scenario(tmp_path / "s", ["vram"])
    con = duckdb.connect(str(scen.sidecar))
    for statement in edits:
        con.execute(statement, [scen.window_start, scen.window_end])
    con.close()
    analysis = analyze(scen.db, load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap")))
    return [f.id for incident in analysis.incidents for f in incident.confirmed]


def test_the_spill_with_its_consequences_is_found(tmp_path: Path) -> None:
    assert findings(tmp_path) == ["vram_spill"]


def test_placement_without_a_consequence_is_no_finding(tmp_path: Path) -> None:
    assert "vram_spill" not in findings(
        tmp_path,
        "UPDATE model_samples SET runner_cpu_percent = 20 WHERE ts >= ? AND ts < ?",
        "DELETE FROM log_timings WHERE ts >= ? AND ts < ?",
    )


def test_a_slowdown_while_the_model_stayed_on_a_roomy_gpu_is_no_vram_spill(tmp_path: Path) -> None:
    assert "vram_spill" not in findings(
        tmp_path,
        "UPDATE model_samples SET size_vram_bytes = size_bytes WHERE ts >= ? AND ts < ?",
        "UPDATE gpu_samples SET memory_used_bytes = memory_total_bytes // 2 WHERE ts >= ? AND ts < ?",
    )


def test_a_full_gpu_alone_is_placement_enough(tmp_path: Path) -> None:
    # the split did not move (the model was already split), but the GPU was full and work slowed
    assert findings(tmp_path, "UPDATE model_samples SET size_vram_bytes = size_bytes // 2 WHERE ts < ? OR ts >= ?") == ["vram_spill"]
