"""What the Live page and the Timeline show of llama-server runners: the slots line under the
runner's PID/RSS/CPU (red for a busy slot without progress, or a runner not answering /slots),
and a tokens/s + busy slots panel on the pages' shared, brush-zoomed time axis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import pytest
import streamlit as st
from test_app_live import (
    MODEL,
    _chart_labels,
    _chart_spec,
    _text,
    run_live,
    write_live_trials,
    write_sidecar,
)
from test_app_timeline import run_timeline, write_trials

from oasis_ops import charts
from oasis_ops.sampler import views
from oasis_ops.sidecar import Sidecar

NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


def runner_row(ts: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"ts": ts, "model": MODEL, "runner_pid": 4242, "runner_create_time": 1.0, "runner_port": 41234,
                           "reachable": True, "error": None, "response_ms": 3.1, "slots_total": 2, "slots_busy": 1,
                           "tokens_in_flight": 120, "requests_processing": None, "requests_deferred": None,
                           "tokens_predicted_total": None, "metrics_enabled": False, "tokens_per_s": 37.2,
                           "rate_source": "slots", "stalled_for_s": 0.0, "stalled_slots": 0, "not_answering_for_s": None,
                           "slots": [{"id": 0, "busy": True, "id_task": 7, "n_decoded": 120, "no_progress_s": 0.0},
                                     {"id": 1, "busy": False, "id_task": 3, "n_decoded": 0, "no_progress_s": None}]}  # fmt: skip
    row.update(values)
    return row


def state(**values: Any) -> views.RunnerState:
    row = runner_row(NOW, **values)
    row["slots"] = json.dumps(row["slots"])
    return views.runner_state(row, NOW + timedelta(seconds=1))


STALLED = {"tokens_per_s": 0.0, "stalled_for_s": 45.0, "stalled_slots": 1,
           "slots": [{"id": 0, "busy": True, "id_task": 7, "n_decoded": 104, "no_progress_s": 45.0},
                     {"id": 1, "busy": False, "id_task": 3, "n_decoded": 0, "no_progress_s": None}]}  # fmt: skip
SILENT = {"reachable": False, "error": "runner did not answer GET http://127.0.0.1:41234/slots within 1 s", "slots_total": None,
          "slots_busy": None, "tokens_in_flight": None, "tokens_per_s": None, "stalled_for_s": None, "stalled_slots": None,
          "not_answering_for_s": 12.0, "slots": None}  # fmt: skip


def test_the_slots_line() -> None:
    assert views.runner_line(None) is None
    busy = state()
    assert not busy.alarm
    assert views.runner_line(busy) == "slots **1/2 busy** · ≥ 37 tok/s :gray[(from /slots: tasks seen at each look)] · 120 tokens in flight"
    metrics = state(rate_source="metrics", tokens_per_s=4.25, requests_deferred=3, metrics_enabled=True)
    assert views.runner_line(metrics) == "slots **1/2 busy** · 4.2 tok/s · 120 tokens in flight · 3 deferred"
    idle = state(slots_busy=0, tokens_in_flight=0, tokens_per_s=0.0)
    assert views.runner_line(idle) == "slots **0/2 busy** · idle"

    stalled = state(**STALLED)
    assert stalled.alarm
    assert views.runner_line(stalled) == ":red[**slot 0 busy, no token for 45 s**] · slots **1/2 busy** · ≥ 0.0 tok/s :gray[(from /slots: tasks seen at each look)] · 120 tokens in flight"
    prompt = state(**{**STALLED, "stalled_for_s": 300.0,
                      "slots": [{"id": 1, "busy": True, "id_task": 9, "n_decoded": 0, "no_progress_s": 300.0}]})  # fmt: skip
    assert ":red[**slot 1 busy, no progress for 5m00s (still on its prompt)**]" in (views.runner_line(prompt) or "")

    silent = state(**SILENT)
    assert silent.alarm
    assert views.runner_line(silent) == ":red[**runner not answering /slots (1 s timeout), for 12 s**]"
    refused = state(**{**SILENT, "error": "cannot connect to the runner at http://127.0.0.1:41234: refused", "not_answering_for_s": 0.0})
    assert views.runner_line(refused) == ":red[**runner not answering /slots**]: cannot connect to the runner at http://127.0.0.1:41234: refused"
    junk = state(slots_total=None, slots_busy=None, error="GET http://127.0.0.1:41234/slots answered HTML: <html>")
    assert views.runner_line(junk) == ":orange[runner /slots gave nothing usable: GET http://127.0.0.1:41234/slots answered HTML: <html>]"


def write_runner_samples(path: Path, now: datetime, last: dict[str, Any]) -> None:
    """10 minutes of runner reads every 2 s (37 tok/s, one busy slot), the newest one `last`."""
    start = now - timedelta(minutes=10)
    rows = [runner_row(start + timedelta(seconds=2 * i)) for i in range(299)]
    rows.append(runner_row(start + timedelta(seconds=598), **last))
    events = [{"ts": start + timedelta(seconds=570), "kind": "runner_no_progress", "model": MODEL,
               "detail": {"runner_pid": 4242, "slots": [{"id": 0, "n_decoded": 104, "no_progress_s": 45.0}]}}]  # fmt: skip
    Sidecar(path).write_batch({"runner_samples": rows, "events": events})


@pytest.mark.parametrize(("last", "expected"), [
    (STALLED, ":red[**slot 0 busy, no token for 45 s**] · slots **1/2 busy**"),
    (SILENT, ":red[**runner not answering /slots (1 s timeout), for 12 s**]"),
], ids=["no-progress", "not-answering"])  # fmt: skip
def test_live_page_shows_the_runner_slots_in_red(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, last: dict[str, Any],
                                                 expected: str) -> None:  # fmt: skip
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    write_sidecar(tmp_path / "trials.ops.duckdb", now, heartbeat_age_s=1.0)
    write_runner_samples(tmp_path / "trials.ops.duckdb", now, last)
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert expected in _text(at), _text(at)

    spec = json.loads(_chart_spec(at))
    titles = [p["title"]["text"] for p in spec["vconcat"]]
    assert titles[2].startswith("llama-server runner: tokens/s") and len(titles) == 6
    runner_panel = spec["vconcat"][2]
    # Same shared time axis as every other panel: the brush's zoom, and markers on it too.
    for panel in spec["vconcat"][:-1]:
        assert all(layer["encoding"]["x"]["scale"]["domain"] == {"param": "zoom"} for layer in panel["layer"]), panel["title"]
    assert any(layer.get("mark", {}).get("strokeDash") == [4, 3] for layer in runner_panel["layer"])
    assert f"{MODEL} slot 0 no progress" in _chart_labels(at)


def test_live_chart_has_no_runner_panel_without_runner_reads() -> None:
    window = views.LiveWindow(NOW - timedelta(minutes=30), NOW, 10,
                              pd.DataFrame(columns=views.TELEMETRY_COLUMNS), pd.DataFrame(columns=["ts", "kind", "label"]))  # fmt: skip
    spec = views.live_chart(views.empty_rollup(window.start, window.end), window)
    assert not window.has_runners and len(spec["vconcat"]) == 5 and spec["datasets"]["runners"] == []


def test_runner_buckets_sum_runners_and_flag_problems(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "t.ops.duckdb")
    assert views.runner_buckets(sidecar, NOW, NOW + timedelta(minutes=5), 60).empty  # no sidecar: empty, no error
    rows = [runner_row(NOW + timedelta(seconds=2 * i), tokens_per_s=30.0) for i in range(30)]  # minute 0: 30 tok/s
    rows += [runner_row(NOW + timedelta(seconds=2 * i), model="llama3.2:3b", runner_pid=5555, tokens_per_s=10.0, slots_busy=2)
             for i in range(30)]  # fmt: skip
    rows += [runner_row(NOW + timedelta(seconds=60 + 2 * i), **STALLED) for i in range(30)]  # minute 1: stalled
    rows += [runner_row(NOW + timedelta(seconds=120), **SILENT)]  # minute 2: not answering
    sidecar.write_batch({"runner_samples": rows})
    frame = views.runner_buckets(sidecar, NOW, NOW + timedelta(minutes=5), 60)
    assert frame["minute"].tolist() == [pd.Timestamp(NOW + timedelta(minutes=m)) for m in range(3)]
    assert frame["tokens_per_s"].tolist()[:2] == [40.0, 0.0] and frame["slots_busy"].tolist()[:2] == [3.0, 1.0]
    assert frame["stalled_slots"].tolist()[:2] == [0.0, 1.0] and frame["not_answering"].tolist() == [False, False, True]
    runs = sidecar.runner_samples_since(NOW, NOW + timedelta(seconds=1))
    assert len(runs) == 2 and set(runs["model"]) == {MODEL, "llama3.2:3b"}

    chart = charts.timeline_chart(_rollup(frame), extra_panels=[lambda x: charts.runner_panel(frame, x)])
    spec = chart.to_dict()
    assert isinstance(chart, alt.VConcatChart) and len(spec["vconcat"]) == 4
    assert "llama-server runner" in json.dumps(spec["vconcat"][2])


def _rollup(frame: pd.DataFrame) -> pd.DataFrame:
    n = len(frame)
    return pd.DataFrame({"minute": frame["minute"], "trials": [10] * n, "ok": [10] * n, "timeouts": [0] * n, "errors": [0] * n,
                         "failure_rate": [0.0] * n, "p50_ms": [4000.0] * n, "p95_ms": [5000.0] * n, "p99_ms": [5100.0] * n,
                         "max_ms": [5200.0] * n})  # fmt: skip


def test_timeline_page_adds_the_runner_panel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    write_trials(db)  # run-new: 17:30 -> 18:29:48 on 2025-11-20
    st.cache_data.clear()
    at = run_timeline(monkeypatch, db)
    assert not at.exception
    assert "llama-server runner" not in str([el.proto for el in at.main if getattr(el.proto, "spec", None)])  # no reads: no panel

    start = datetime(2025, 11, 20, 17, 50, tzinfo=UTC)
    rows = [runner_row(start + timedelta(seconds=2 * i)) for i in range(300)]
    rows += [runner_row(start + timedelta(seconds=600 + 2 * i), **STALLED) for i in range(30)]
    Sidecar(tmp_path / "trials.ops.duckdb").write_batch({"runner_samples": rows, "events": [
        {"ts": start + timedelta(seconds=630), "kind": "runner_no_progress", "model": MODEL, "detail": {"slots": [{"id": 0}]}}]})  # fmt: skip
    st.cache_data.clear()
    at = run_timeline(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    specs = [str(el.proto.spec) for el in at.main if getattr(el.proto, "spec", None)]
    assert specs and "llama-server runner: tokens/s" in specs[0]
    assert "runner_no_progress" in specs[0] or "runner_no_progress" in str([el.proto for el in at.main])
