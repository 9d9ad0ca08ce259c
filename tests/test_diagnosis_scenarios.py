"""Each fault alone is diagnosed alone (no false companions); a healthy slow run has no incident.

Scenarios come from tests/helpers_scenarios.py: a trial DB, a sidecar and both logs written by
the real writers and ingested by the real log ingester.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_scenarios import INCIDENT_WINDOW_START, Scenario, build_scenario

from oasis_ops import cli
from oasis_ops.diagnosis.incidents import analyze
from oasis_ops.settings import Settings, load_settings

EXPECTED = {
    "deadlock": "stopping_deadlock",
    "memory": "memory_pressure",
    "flash": "flash_attention_cpu_spill",
    "cold": "cold_start",
    "client": "client_timeout_only",
    "vram": "vram_spill",
}


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_each_fault_alone_is_diagnosed_alone(tmp_path: Path, fault: str) -> None:
    scen = build_scenario(tmp_path / fault, [fault])
    analysis = analyze(scen.db, settings_for(tmp_path))
    assert len(analysis.incidents) == 1, analysis.as_json()
    incident = analysis.incidents[0]
    assert incident.window.start == scen.window_start and incident.window.end == scen.window_end
    confirmed = [f.id for f in incident.findings if f.status == "confirmed"]
    assert confirmed == [EXPECTED[fault]], json.dumps(analysis.as_json(), indent=1)
    # The only refuted finding ever reported is cold start, and only with its evidence.
    for f in incident.refuted:
        assert f.id == "cold_start" and fault != "cold"
        assert "listed loaded in every /api/ps sample 17:58–18:04" in f.evidence[0] or "listed (" in f.evidence[0]
    finding = incident.confirmed[0]
    assert 0.5 <= finding.confidence <= 1.0 and finding.evidence and finding.action
    assert all(isinstance(e, str) and any(ch.isdigit() for ch in e) for e in finding.evidence)


def test_evidence_quotes_the_numbers(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "mem", ["memory"])
    (incident,) = analyze(scen.db, settings_for(tmp_path)).incidents
    memory = incident.confirmed[0]
    text = " ".join(memory.evidence)
    assert "Pages free: 2,103,449 at 16:58 → 58,402 at 17:58 UTC" in text
    assert "page size 16,384 bytes" in text and "957 MB" in text and "36x less" in text
    assert "Swapouts: 0 at 16:58" in text and "critical" in text
    assert memory.values["page_size"] == 16384 and memory.values["pages_free_low"] == 58_402
    refuted = incident.refuted[0]
    assert "image encoder 17 ms median in the window vs 17 ms before" in " ".join(refuted.evidence)


def test_healthy_but_slow_run_has_no_incident(tmp_path: Path) -> None:
    scen: Scenario = build_scenario(tmp_path / "slow", [], slow=True)
    analysis = analyze(scen.db, settings_for(tmp_path))
    assert analysis.incidents == []
    assert analysis.scan.baseline.p95_median_ms is not None and analysis.scan.baseline.p95_median_ms > 20_000
    assert analysis.as_json() == []


def test_incidents_cli_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    scen = build_scenario(tmp_path / "stack", ["deadlock", "memory", "flash"])
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(tmp_path / "snap"))
    assert cli.main(["incidents", "--db", str(scen.db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, list) and len(doc) == 1
    window = doc[0]
    for key in ("start", "end", "trials", "failures", "failure_rate", "p95_ms_before", "p95_ms_during", "findings"):
        assert key in window
    assert window["start"] == INCIDENT_WINDOW_START.isoformat()
    ids = {f["id"]: f["status"] for f in window["findings"]}
    assert ids == {"stopping_deadlock": "confirmed", "memory_pressure": "confirmed",
                   "flash_attention_cpu_spill": "confirmed", "cold_start": "refuted"}  # fmt: skip
    for f in window["findings"]:
        assert set(f) >= {"id", "status", "confidence", "evidence", "action", "values"}
        assert 0 <= f["confidence"] <= 1
    assert cli.main(["incidents", "--db", str(scen.db)]) == 0
    out = capsys.readouterr().out
    assert "Window 1: 2025-11-20 17:58–18:04 UTC" in out and "[CONFIRMED" in out and "[REFUTED" in out
    # Bad input: one clear line, the right exit code.
    assert cli.main(["incidents", "--db", str(tmp_path / "missing.duckdb")]) == 1
    assert "not found" in capsys.readouterr().err
    assert cli.main(["incidents", "--db", str(scen.db), "--from", "2025-11-20T17:00:00Z"]) == 2


def test_windows_without_a_sidecar_have_no_causes(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "nosidecar", ["client"])
    scen.sidecar.unlink()
    analysis = analyze(scen.db, settings_for(tmp_path))
    assert not analysis.has_sidecar
    assert len(analysis.incidents) == 1 and analysis.incidents[0].findings == []
