"""The Timeline page draws the sidecar's state changes and audited actions as chart markers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import streamlit as st
from test_app_timeline import run_timeline, write_trials

from oasis_ops.sidecar import Sidecar


def _captions(at) -> str:  # type: ignore[no-untyped-def]
    return " ".join(c.value for c in at.caption)


def test_markers_come_from_the_sidecar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    write_trials(db)

    at = run_timeline(monkeypatch, db)
    assert not at.exception
    assert "Dashed lines" not in _captions(at)  # no sidecar yet: no markers, no error

    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    inside = datetime(2025, 11, 20, 18, 4, 13, tzinfo=UTC)
    sidecar.record_event("stopping", model="gemma4:e4b", detail={"expires_at": inside.isoformat()}, ts=inside)
    sidecar.record_action(
        "hard_kill", target="gemma4:e4b", params={"pid": 4242}, requested_by="ui", outcome="done",
        detail={"message": "killed"}, duration_ms=120.0, ts=datetime(2025, 11, 20, 18, 10, tzinfo=UTC),
    )
    sidecar.record_event("sampler_started", ts=inside)  # noise: not a marker
    sidecar.record_action("evict", target="gemma4:e4b", outcome="stuck", requested_by="cli",
                          ts=datetime(2025, 11, 19, 9, 0, tzinfo=UTC))  # outside the range

    st.cache_data.clear()  # the page caches markers for 15 s; this is a new look
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert "Dashed lines: 2 state changes, actions and early warnings" in _captions(at)


def test_a_finished_run_extends_over_what_happened_after_its_last_trial(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The write-up's eviction came after the last trial; the default run range must show it."""
    db = tmp_path / "trials.duckdb"
    write_trials(db)  # run-new's last trial starts at 18:29:48
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    sidecar.record_event("stopping", model="gemma4:e4b", ts=datetime(2025, 11, 20, 18, 40, 5, tzinfo=UTC))
    sidecar.record_event("stopping", model="gemma4:e4b", ts=datetime(2025, 11, 20, 23, 0, tzinfo=UTC))  # too late

    st.cache_data.clear()
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    captions = _captions(at)
    # The summary gives the run's own span (its last trial ended 18:29:51) and says how far the chart reaches.
    assert "run `run-new`: 2025-11-20 17:30:00 → 18:29:51 UTC (59 min 51 s)" in captions, captions
    assert "the chart runs on past the run's end" in captions, captions
    buckets = at.dataframe[0].value["bucket"]
    assert str(buckets.iloc[-1]).startswith("2025-11-20 18:41")  # up to the Stopping at 18:40:05, not the one at 23:00
    assert "Dashed lines: 1 state changes, actions and early warnings" in captions


def test_early_warnings_are_markers_on_the_replayed_day(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from test_app_live import _chart_labels

    from oasis_ops.demo import replay

    replay.write_replay(tmp_path, ingest=False)
    st.cache_data.clear()
    at = run_timeline(monkeypatch, tmp_path / replay.TRIALS_FILE)
    assert not at.exception, [e.value for e in at.exception]
    labels = _chart_labels(at)
    assert {"warning: memory_exhaustion (warn)", "warning: stuck_stopping (critical)"} <= labels, labels
    assert "early warnings (orange" in _captions(at)
