"""Pins of the Diagnostics page's timing view (oasis_ops.diagnosis.views): which requests become
dots, and the chart a user reads (log scale, UTC axis, the two phases' colours, shaded incident
windows). Found unchecked by mutation testing: only the page's AppTest reached it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from oasis_ops.diagnosis.views import MAX_POINTS, timing_chart, timing_frame

T0 = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)


def timings(rows: list[tuple[int, Any, Any]]) -> pd.DataFrame:
    return pd.DataFrame({"ts": [T0 + timedelta(seconds=s) for s, _, _ in rows], "image_encode_ms": [e for _, e, _ in rows],
                         "eval_ms": [v for _, _, v in rows]})  # fmt: skip


def test_timing_frame_keeps_positive_numbers_of_each_phase_in_long_form() -> None:
    frame = timing_frame(timings([(0, 100.0, 2000.0), (1, None, 0.0), (2, "x", -3.0), (3, "250", float("nan")), (4, 0.0, 5.5)]))
    assert list(frame.columns) == ["ts", "phase", "ms"]
    got = [(int((ts - T0).total_seconds()), phase, ms) for ts, phase, ms in frame.itertuples(index=False)]
    assert got == [(0, "image encode", 100.0), (3, "image encode", 250.0), (0, "generation (eval)", 2000.0), (4, "generation (eval)", 5.5)]
    assert str(frame["ts"].dtype).startswith("datetime64") and str(frame["ts"].dt.tz) == "UTC"
    assert frame.index.is_unique  # one long frame, numbered afresh before the filter


def test_timing_frame_takes_the_newest_requests_only() -> None:
    frame = timing_frame(timings([(s, 10.0 + s, 20.0 + s) for s in range(10)]), max_points=3)
    assert sorted(frame.loc[frame["phase"] == "image encode", "ms"]) == [17.0, 18.0, 19.0]
    assert MAX_POINTS == 5000
    many = timing_frame(timings([(s, 1.0, 1.0) for s in range(MAX_POINTS + 5)]))
    assert len(many) == 2 * MAX_POINTS


def test_timing_frame_of_nothing_has_the_columns_and_types() -> None:
    empty = timing_frame(pd.DataFrame())
    assert empty.empty and list(empty.columns) == ["ts", "phase", "ms"]
    assert str(empty["ts"].dtype) == "datetime64[us, UTC]" and empty["phase"].dtype == object and empty["ms"].dtype == "float64"


def test_timing_chart_spec_is_what_the_page_shows() -> None:
    class Window:
        def __init__(self, start: datetime, end: datetime) -> None:
            self.start, self.end = start, end

    spec = timing_chart(timings([(0, 100.0, 2000.0)]), [Window(T0, T0 + timedelta(minutes=5))], height=300).to_dict()  # type: ignore[list-item]
    assert spec["height"] == 300
    shade, dots = spec["layer"]
    assert shade["mark"] == {"type": "rect", "color": "#d62728", "opacity": 0.12}
    assert shade["encoding"] == {"x": {"field": "start", "type": "temporal"}, "x2": {"field": "end"}}
    spans = spec["datasets"][shade["data"]["name"]]
    assert [(pd.Timestamp(r["start"]), pd.Timestamp(r["end"])) for r in spans] == [(pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=5)))]
    assert dots["mark"] == {"type": "circle", "opacity": 0.6, "size": 14}
    assert dots["encoding"] == {
        "color": {"field": "phase", "legend": {"orient": "top"}, "title": None, "type": "nominal",
                  "scale": {"domain": ["image encode", "generation (eval)"], "range": ["#1f77b4", "#ff7f0e"]}},
        "tooltip": [{"field": "ts", "format": "%H:%M:%S", "title": "time (UTC)", "type": "temporal"},
                    {"field": "phase", "type": "nominal"}, {"field": "ms", "format": ",.0f", "type": "quantitative"}],
        "x": {"axis": {"format": "%H:%M"}, "field": "ts", "scale": {"type": "utc"}, "title": "time (UTC)", "type": "temporal"},
        "y": {"field": "ms", "scale": {"type": "log"}, "title": "milliseconds (log)", "type": "quantitative"},
    }  # fmt: skip
    assert [(r["phase"], r["ms"]) for r in spec["datasets"][dots["data"]["name"]]] == [("image encode", 100.0), ("generation (eval)", 2000.0)]
    plain = timing_chart(timings([(0, 1.0, 1.0)])).to_dict()
    assert plain["height"] == 260
    assert plain["datasets"][plain["layer"][0]["data"]["name"]] == []  # no windows: nothing shaded
