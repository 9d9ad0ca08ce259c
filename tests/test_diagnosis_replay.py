"""The replayed incident (`oasis-ops demo replay`): one window 17:58-18:04 UTC (the write-up's times),
the three stacked faults confirmed and the cold-start theory refuted with its evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from oasis_ops import cli
from oasis_ops.diagnosis.incidents import Analysis, analyze
from oasis_ops.settings import load_settings


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    assert cli.main(["demo", "replay", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def analysis(replay_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path_factory.mktemp("snap")))
    return analyze(replay_dir / "trials.duckdb", settings)


def test_one_window_about_1758_to_1804_utc(analysis: Analysis) -> None:
    assert len(analysis.incidents) == 1, analysis.as_json()
    w = analysis.incidents[0].window
    assert w.start == datetime(2025, 11, 20, 17, 58, tzinfo=UTC)
    assert w.end == datetime(2025, 11, 20, 18, 4, tzinfo=UTC)
    assert w.failure_rate is not None and w.failure_rate > 0.95
    # the write-up's healthy period: p50 ~4.1 s, p95 ~6.1 s, failure rate ~0.05%
    assert w.p50_ms_before == pytest.approx(4100, rel=0.05)
    assert w.p95_ms_before == pytest.approx(6100, rel=0.05)
    assert w.failure_rate_before is not None and w.failure_rate_before < 0.001
    assert w.p95_ms_during is not None and w.p95_ms_during >= 60_000


def test_three_stacked_faults_confirmed_cold_start_refuted(analysis: Analysis) -> None:
    incident = analysis.incidents[0]
    statuses = {f.id: f.status for f in incident.findings}
    assert statuses == {
        "stopping_deadlock": "confirmed",
        "memory_pressure": "confirmed",
        "flash_attention_cpu_spill": "confirmed",
        "cold_start": "refuted",
    }
    by_id = {f.id: f for f in incident.findings}
    deadlock = by_id["stopping_deadlock"]
    assert deadlock.values["still_stopping"] and deadlock.values["trials_completed"] == 0
    assert deadlock.values["runner_cpu_percent_median"] == pytest.approx(99.7, abs=0.3)
    assert deadlock.values["stopping_s"] >= 600
    memory = by_id["memory_pressure"]
    assert memory.values["page_size"] == 16384 and memory.values["free_drop_factor"] >= 10
    assert memory.values["swapouts_increase"] >= 500_000
    assert any("Pages free:" in e and "page size 16,384 bytes" in e for e in memory.evidence)
    flash = by_id["flash_attention_cpu_spill"]
    assert "OLLAMA_FLASH_ATTENTION:true" in flash.values["flash_source"]  # the environment, stated by server config
    assert any("100% GPU" in e for e in flash.evidence)
    cold = by_id["cold_start"]
    text = " | ".join(cold.evidence)
    assert "gemma4:e4b listed loaded in every /api/ps sample 17:58–18:04 (n=36), 100% GPU" in text
    assert "image encoder 17 ms median in the window vs 17 ms before" in text
    assert cold.confidence >= 0.85
