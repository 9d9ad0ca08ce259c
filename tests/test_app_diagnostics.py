"""The Diagnostics page, headless (AppTest), on a scenario with the three stacked faults."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from helpers_scenarios import build_scenario
from streamlit.testing.v1 import AppTest

from oasis_ops.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # pages/ is the app's package, not an installed one
from pages._report import report_html  # noqa: E402

APP = ROOT / "app.py"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_page(monkeypatch: pytest.MonkeyPatch, db: Path | str) -> AppTest:
    monkeypatch.setenv("OASIS_OPS_DB", str(db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")  # preflight: nobody answers
    monkeypatch.setenv("OASIS_OPS_SERVER_LOG", "/nonexistent/server.log")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/diagnostics.py").run()
    return at


def test_diagnostics_page_shows_windows_findings_and_timings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "stack", ["deadlock", "memory", "flash"])
    at = run_page(monkeypatch, scen.db)
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "Window 1: 2025-11-20 17:58–18:04 UTC" in text
    for finding in ("stopping_deadlock", "memory_pressure", "flash_attention_cpu_spill", "cold_start"):
        assert f"`{finding}`" in text
    assert text.count("**CONFIRMED**") == 3 and text.count("**REFUTED**") == 1
    assert "Pages free: 2,103,449" in text
    # preflight ran against this machine: Ollama is down here, so at least a warning
    assert "**ollama**" in text and "cannot connect" in text
    assert len(at.metric) >= 4 and at.metric[1].value == "100%"
    # the timing table and the report button
    assert len(at.dataframe) == 1 and list(at.dataframe[0].value["encode during (ms)"]) == [pytest.approx(17, abs=1)]
    assert any(el.type == "download_button" for el in at.main)


def test_diagnostics_page_on_a_bad_path_and_no_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = run_page(monkeypatch, tmp_path / "missing.duckdb")
    assert not at.exception
    assert at.error and "not found" in at.error[0].value
    at = run_page(monkeypatch, "")
    assert not at.exception and any("No trial database chosen" in i.value for i in at.info)


def test_report_download_builds_html(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "mem", ["memory"])
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    html = report_html(str(scen.db), settings).decode()
    assert html.startswith("<!DOCTYPE html>") and "Host memory pressure" in html and "<svg" in html
    missing = report_html(str(tmp_path / "none.duckdb"), settings).decode()
    assert "No report" in missing and "not found" in missing
