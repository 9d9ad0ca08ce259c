"""Chart builders: valid Vega-Lite, one brush zooming every panel, markers on every panel."""

from __future__ import annotations

import json

import pandas as pd

from oasis_ops import charts


def _rollup(minutes: int = 30) -> pd.DataFrame:
    minute = pd.date_range("2025-11-20 17:40", periods=minutes, freq="1min", tz="UTC")
    trials = pd.Series([20] * minutes)
    timeouts = pd.Series([19 if 18 <= i < 24 else 0 for i in range(minutes)])
    return pd.DataFrame(
        {
            "minute": minute,
            "trials": trials,
            "ok": trials - timeouts,
            "timeouts": timeouts,
            "errors": 0,
            "failure_rate": timeouts / trials,
            "p50_ms": [60000.0 if t else 4100.0 for t in timeouts],
            "p95_ms": [60000.0 if t else 6100.0 for t in timeouts],
            "p99_ms": 6500.0,
            "max_ms": 7000.0,
        }
    )


def test_timeline_chart_links_every_panel_to_one_brush() -> None:
    markers = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-11-20 18:05:10", "2025-11-20 18:06:00"], utc=True),
            "kind": ["stopping", "hard_kill"],
            "label": ["gemma4:e4b Stopping", "hard-kill pid 4242"],
        }
    )
    spec = charts.timeline_chart(_rollup(), markers).to_dict()  # to_dict() validates the schema
    text = json.dumps(spec)
    panels = spec["vconcat"]
    assert len(panels) == 3  # latency, failure rate, overview
    zoom = next(p for p in spec["params"] if p["name"] == "zoom")
    assert zoom["select"] == {"type": "interval", "encodings": ["x"]}
    assert zoom["views"] == [panels[-1]["name"]]  # the brush lives on the overview strip
    # Both zoomable panels take their x domain from the overview's brush, on a UTC scale.
    for panel in panels[:2]:
        scales = [layer["encoding"]["x"]["scale"] for layer in panel["layer"] if "x" in layer.get("encoding", {})]
        assert scales and all(s == {"domain": {"param": "zoom"}, "type": "utc"} for s in scales)
    # Markers: a rule on each zoomable panel, labelled on the top one only.
    assert text.count('"strokeDash"') == 2
    assert text.count('"text": {"field": "label"') == 1
    assert "hard-kill pid 4242" in text
    # Failure is red; latency is shown in seconds.
    assert charts.FAILURE_RED in text and '"seconds"' in text


def test_prepare_rollup_converts_units_and_keeps_gaps() -> None:
    rollup = _rollup(3)
    rollup.loc[1, "p50_ms"] = float("nan")  # a bucket with only failures has no latency
    frame = charts.prepare_rollup(rollup)
    assert list(frame["p95_s"]) == [6.1, 6.1, 6.1]
    assert frame["p50_s"].isna().tolist() == [False, True, False]
    assert frame["when"].iloc[0] == "2025-11-20 17:40 UTC"


def test_no_markers_adds_no_layers() -> None:
    assert charts.marker_layers(None) == []
    assert charts.marker_layers(pd.DataFrame(columns=["ts", "kind", "label"])) == []
    spec = charts.timeline_chart(_rollup(), log_latency=True).to_dict()
    assert '"type": "log"' in json.dumps(spec)
