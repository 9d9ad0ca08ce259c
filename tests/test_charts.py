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


def _x_scales(panel: dict) -> list[dict]:
    return [layer["encoding"]["x"]["scale"] for layer in panel["layer"] if "x" in layer.get("encoding", {})]


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
    zoom = [p for layer in panels[-1]["layer"] for p in layer.get("params", []) if p["name"] == "zoom"]
    assert [z["select"] for z in zoom] == [{"type": "interval", "encodings": ["x"]}]  # the brush is the strip's
    # Both zoomable panels take their x domain from the overview's brush, on a UTC scale, no padding.
    for panel in panels[:2]:
        scales = _x_scales(panel)
        assert scales and all(s == {"domain": {"param": "zoom"}, "type": "utc", "padding": 0} for s in scales)
    # One domain for all: the bounds dataset holds the range widened to whole minutes.
    bounds = [b["minute"] for b in spec["datasets"]["bounds"]]
    assert bounds == [charts.epoch_ms(pd.Timestamp("2025-11-20 17:40", tz="UTC")),
                      charts.epoch_ms(pd.Timestamp("2025-11-20 18:10", tz="UTC"))]
    # Markers inside the domain only (18:06 is; nothing past 18:10 would be): a dashed rule on
    # each zoomable panel, their labels an axis of the top panel only.
    assert text.count('"strokeDash"') == 2
    assert [m["label"] for m in spec["datasets"]["markers"]] == ["gemma4:e4b Stopping", "hard-kill pid 4242"]
    top_axes = [layer["encoding"]["x"]["axis"] for layer in panels[0]["layer"]]
    assert sum(1 for a in top_axes if a and a.get("orient") == "top") == 1
    assert not any(a and a.get("orient") == "top" for layer in panels[1]["layer"] for a in [layer["encoding"]["x"]["axis"]])
    assert "hard-kill pid 4242" in text
    # Failure bars are red; latency is shown in seconds.
    assert charts.FAILURE_FILL in text and '"seconds"' in text


def test_markers_outside_the_domain_are_left_out() -> None:
    markers = pd.DataFrame({"ts": pd.to_datetime(["2025-11-20 19:00"], utc=True), "kind": ["loaded"], "label": ["late"]})
    spec = charts.timeline_spec(_rollup(), markers)
    assert spec["datasets"]["markers"] == []
    assert '"strokeDash"' not in json.dumps(spec)  # no marker layers without markers


def test_time_domain_is_whole_buckets() -> None:
    lo, hi = charts.time_domain(pd.Timestamp("2025-11-20 17:35:20", tz="UTC"), pd.Timestamp("2025-11-20 18:05:14", tz="UTC"), 60)
    assert (lo, hi) == (charts.epoch_ms(pd.Timestamp("2025-11-20 17:35", tz="UTC")),
                        charts.epoch_ms(pd.Timestamp("2025-11-20 18:06", tz="UTC")))
    lo, hi = charts.time_domain(pd.Timestamp("2025-11-20 17:35:20", tz="UTC"), pd.Timestamp("2025-11-20 17:35:20", tz="UTC"), 600)
    assert hi - lo == 600_000 and lo % 600_000 == 0  # never empty, aligned to the bucket


def test_all_zero_or_missing_values_give_a_plain_axis_never_nan() -> None:
    assert charts.y_scale([0, 0, 0]) == {"zero": True, "domain": [0, 1.0]}
    assert charts.y_scale([None, float("nan")]) == {"zero": True, "domain": [0, 1.0]}
    assert charts.y_scale([]) == {"zero": True, "domain": [0, 1.0]}
    assert charts.y_scale([0, 3]) == {"zero": True}


def test_time_labels_carry_every_nonzero_field() -> None:
    short, long = charts.time_label_expr(3_600_000), charts.time_label_expr(3 * 86_400_000)
    assert "%b %d" not in short.split("?")[1] and "%H:%M:%S.%L" in short
    assert "'%b %d %H:%M'" in long  # a multi-day chart dates every label


def test_empty_layers_are_left_out() -> None:
    rollup = _rollup(3)
    rollup["p50_ms"] = float("nan")
    rollup["p95_ms"] = float("nan")
    rows = charts.trial_rows(rollup, 60)
    assert charts.latency_layers({"name": "trials"}, rows) == []
    assert charts.failure_layers({"name": "trials"}, rows)  # failure rates are there


def test_prepare_rollup_converts_units_and_keeps_gaps() -> None:
    rollup = _rollup(3)
    rollup.loc[1, "p50_ms"] = float("nan")  # a bucket with only failures has no latency
    frame = charts.prepare_rollup(rollup)
    assert list(frame["p95_s"]) == [6.1, 6.1, 6.1]
    assert frame["p50_s"].isna().tolist() == [False, True, False]
    assert frame["when"].iloc[0] == "2025-11-20 17:40 UTC"


def test_no_markers_adds_no_layers() -> None:
    assert charts.marker_layers(None) == []
    assert charts.marker_layers(charts.marker_rows(pd.DataFrame(columns=["ts", "kind", "label"]))) == []
    spec = charts.timeline_chart(_rollup(), log_latency=True).to_dict()
    assert '"type": "log"' in json.dumps(spec)


def test_marker_labels_that_would_overlap_are_left_out() -> None:
    # four markers within a minute of a 30-minute chart: on 700 px, 1 min is ~23 px
    t0 = charts.epoch_ms(pd.Timestamp("2025-11-20 18:00", tz="UTC"))
    times = [t0, t0 + 10_000, t0 + 20_000, t0 + 20 * 60_000]
    labels = ["sampler started", "pause runner (done)", "resume runner (done)", "loaded"]
    kept = charts.spaced_labels(times, labels, 30 * 60_000)
    assert kept == ["sampler started", "", "", "loaded"]
    # a minute apart on a 2-minute chart 1400 px wide: ~700 px apart, both kept
    assert charts.spaced_labels([t0, t0 + 60_000], labels[:2], 2 * 60_000, width_px=1400) == labels[:2]
    spec = charts.timeline_spec(_rollup(), pd.DataFrame({"ts": pd.to_datetime(times, unit="ms", utc=True), "kind": "loaded",
                                                         "label": labels}))
    top = next(layer["encoding"]["x"]["axis"] for layer in spec["vconcat"][0]["layer"]
               if layer["encoding"]["x"]["axis"] and layer["encoding"]["x"]["axis"].get("orient") == "top")
    assert '"pause runner (done)"' not in top["labelExpr"] and '"sampler started"' in top["labelExpr"]
