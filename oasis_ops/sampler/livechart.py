"""The Live chart as a Vega-Lite spec, without Streamlit.

`live_chart()` stacks latency, failure rate, the runner's tokens/s and busy slots (when a
llama-server runner was read), free memory and swap-outs with pressure on one shared time axis,
markers on every panel, and a trials strip whose brush zooms every panel.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from oasis_ops import charts
from oasis_ops.sampler.window import LiveWindow

# --- the chart: a Vega-Lite spec built as plain data -------------------------------------------------
# Built as a dict rather than through Altair: with four layered panels, markers on each and a
# brush, Altair's object copies cost ~0.7 s per build here (bench/bench_live.py), this ~5 ms.
# Colours, the time field, the marker palette and the panel look are charts.py's.
MEMORY_COLOR = "#2ca02c"
SWAP_COLOR = "#8c564b"
PRESSURE_COLOR = "#e377c2"
TOKENS_COLOR = charts.TOKENS_COLOR
SLOTS_COLOR = charts.SLOTS_COLOR
PANEL_HEIGHT = 140
AXIS_INSIDE = {"title": None, "labelColor": "#777777", "labelFontSize": 10, "tickSize": 0, "domain": False, "labelPadding": -2,
               "labelBaseline": "bottom"}  # fmt: skip
LEFT_AXIS = {**AXIS_INSIDE, "orient": "left", "labelAlign": "left"}
RIGHT_AXIS = {**AXIS_INSIDE, "orient": "right", "labelAlign": "right", "labelColor": "#999999", "grid": False}


def _ms(values: pd.Series) -> list[int]:
    """Epoch milliseconds (Vega's time unit), whatever the datetime resolution (ns or µs)."""
    return [int(v) for v in pd.to_datetime(pd.Series(values), utc=True).dt.as_unit("ms").astype("int64")]


def _clean_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows (NaN -> None)."""
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in frame.to_dict("records")]


def _title(text: str) -> dict[str, Any]:
    return {"text": text, "anchor": "start", "fontSize": 12, "fontWeight": "normal", "color": "#333333", "offset": 4}


def _x(domain: list[int], brush: bool, labels: bool) -> dict[str, Any]:
    scale: dict[str, Any] = {"type": "utc", "domain": {"param": "zoom"} if brush else domain}
    axis = {"format": "%H:%M", "title": None, "labels": labels, "labelOverlap": True, "grid": True}
    return {"field": charts.TIME_FIELD, "type": "temporal", "scale": scale, "axis": axis}


def _marker_layers(markers: list[dict[str, Any]], x: dict[str, Any], with_text: bool) -> list[dict[str, Any]]:
    if not markers:
        return []
    kinds = sorted({m["kind"] for m in markers})
    color = {"field": "kind", "type": "nominal", "legend": None,
             "scale": {"domain": kinds, "range": [charts.MARKER_COLORS.get(k, charts.DEFAULT_MARKER_COLOR) for k in kinds]}}  # fmt: skip
    tooltip = [{"field": "when", "title": "at"}, {"field": "kind"}, {"field": "label"}]
    layers: list[dict[str, Any]] = [{"data": {"name": "markers"}, "mark": {"type": "rule", "strokeDash": [4, 3], "strokeWidth": 1.5},
                                     "encoding": {"x": x, "color": color, "tooltip": tooltip}}]  # fmt: skip
    if with_text:
        layers.append({"data": {"name": "markers"},
                       "mark": {"type": "text", "align": "right", "baseline": "top", "dx": -3, "dy": 2, "fontSize": 10},
                       "encoding": {"x": x, "y": {"value": 0}, "text": {"field": "label"}, "color": color, "tooltip": tooltip}})  # fmt: skip
    return layers


def live_chart(rollup: pd.DataFrame, window: LiveWindow) -> dict[str, Any]:
    """Latency (p50/p95), failure rate, the llama-server runner's tokens/s and busy slots (only
    when a runner was read in the window), free memory (GB and pages), swap-outs per minute with
    pressure: one shared UTC time axis over the window, markers on every panel, and a trials
    strip at the bottom whose brush zooms every panel. A Vega-Lite spec for st.vega_lite_chart."""
    simulated = window.simulated
    tag = " · SIMULATED host (demo)" if simulated else ""
    domain = [int(window.start.timestamp() * 1000), int(window.end.timestamp() * 1000)]

    trials = charts.prepare_rollup(rollup)
    trials[charts.TIME_FIELD] = _ms(trials[charts.TIME_FIELD])
    tele = window.telemetry
    telemetry = pd.DataFrame({
        charts.TIME_FIELD: _ms(tele["minute"]),
        "free_gb": tele["mem_free_bytes"] / 1e9,
        "available_gb": tele["mem_available_bytes"] / 1e9,
        "pages_free": tele["pages_free"],
        "page_size": tele["page_size"],
        "swapouts_per_min": tele["swapouts_per_min"],
        "pressure": tele["pressure"],
        "when": pd.to_datetime(tele["minute"], utc=True).dt.strftime("%H:%M:%S UTC"),
    })  # fmt: skip
    markers: list[dict[str, Any]] = []
    if not window.markers.empty:
        times = pd.to_datetime(window.markers["ts"], utc=True)
        for ms, when, kind, label in zip(_ms(window.markers["ts"]), times.dt.strftime("%H:%M:%S UTC"),
                                         window.markers["kind"], window.markers["label"], strict=True):  # fmt: skip
            markers.append({charts.TIME_FIELD: ms, "when": when, "kind": str(kind), "label": str(label)})

    def panel(title: str, layers: list[dict[str, Any]], x: dict[str, Any], *, text: bool = False, independent_y: bool = False,
              height: int = PANEL_HEIGHT) -> dict[str, Any]:  # fmt: skip
        resolve: dict[str, Any] = {"scale": {"color": "independent", **({"y": "independent"} if independent_y else {})}}
        # Two invisible points at the window's ends: with nothing brushed every panel's time scale
        # is exactly the window, so markers line up across panels.
        bounds = {"data": {"name": "bounds"}, "mark": {"type": "point", "opacity": 0}, "encoding": {"x": x}}
        return {"title": _title(title), "height": height, "width": "container",
                "layer": [bounds, *layers, *_marker_layers(markers, x, text)], "resolve": resolve}  # fmt: skip

    trial_tips = [{"field": "when", "title": "bucket"}, {"field": "trials", "format": ","}, {"field": "failures", "format": ","},
                  {"field": "failure_rate", "title": "failure rate", "format": ".1%"},
                  {"field": "p50_s", "title": "p50 (s)", "format": ".2f"}, {"field": "p95_s", "title": "p95 (s)", "format": ".2f"}]  # fmt: skip
    mem_tips = [{"field": "when", "title": "bucket"}, {"field": "free_gb", "title": "free (GB)", "format": ".2f"},
                {"field": "pages_free", "title": "free pages", "format": ","}, {"field": "page_size", "title": "page size (B)", "format": ","},
                {"field": "available_gb", "title": "available (GB)", "format": ".2f"}]  # fmt: skip
    swap_tips = [{"field": "when", "title": "bucket"}, {"field": "swapouts_per_min", "title": "swap-outs/min", "format": ",.0f"},
                 {"field": "pressure", "title": "pressure (max)", "format": ".1f"}]  # fmt: skip
    runner_tips = [{"field": "when", "title": "bucket"}, {"field": "tokens_per_s", "title": "tokens/s (mean)", "format": ",.1f"},
                   {"field": "slots_busy", "title": "busy slots (max)", "format": ","}, {"field": "slots_total", "title": "slots", "format": ","},
                   {"field": "tokens_in_flight", "title": "tokens in flight (max)", "format": ","},
                   {"field": "stalled_for_s", "title": "longest without progress (s)", "format": ",.0f"},
                   {"field": "problem", "title": "problem"}]  # fmt: skip
    runner_data: list[dict[str, Any]] = []
    if window.has_runners:
        run = window.runners
        problem = [("not answering /slots" if bool(na) else "slot without progress" if (st or 0) > 0 else None)
                   for na, st in zip(run["not_answering"], run["stalled_slots"].fillna(0), strict=True)]  # fmt: skip
        runner_data = _clean_records(pd.DataFrame({
            charts.TIME_FIELD: _ms(run["minute"]), "tokens_per_s": run["tokens_per_s"], "slots_busy": run["slots_busy"],
            "slots_total": run["slots_total"], "tokens_in_flight": run["tokens_in_flight"], "stalled_for_s": run["stalled_for_s"],
            "problem": problem, "when": pd.to_datetime(run["minute"], utc=True).dt.strftime("%H:%M:%S UTC"),
        }))  # fmt: skip

    x = _x(domain, True, False)
    latency = panel("Latency (s)", [{
        "data": {"name": "trials"},
        "transform": [{"fold": ["p50_s", "p95_s"], "as": ["series", "seconds"]},
                      {"calculate": "replace(datum.series, '_s', '')", "as": "series"}],
        "mark": {"type": "line", "strokeWidth": 1.6, "interpolate": "monotone", "point": {"size": 12}},
        "encoding": {"x": x, "y": {"field": "seconds", "type": "quantitative", "scale": {"zero": True}, "axis": LEFT_AXIS},
                     "color": {"field": "series", "type": "nominal", "title": None,
                               "scale": {"domain": ["p50", "p95"], "range": [charts.P50_COLOR, charts.P95_COLOR]},
                               "legend": {"orient": "top-right", "direction": "horizontal", "labelFontSize": 11}},
                     "tooltip": trial_tips},
    }], x, text=True)  # fmt: skip
    failure = panel("Failure rate (timeouts + errors)", [{
        "data": {"name": "trials"},
        "mark": {"type": "area", "color": charts.FAILURE_RED, "opacity": 0.75, "interpolate": "step-after", "line": {"color": charts.FAILURE_RED}},
        "encoding": {"x": x, "y": {"field": "failure_rate", "type": "quantitative", "scale": {"domain": [0, 1]},
                                   "axis": {**LEFT_AXIS, "format": "%", "tickCount": 4}}, "tooltip": trial_tips},
    }], x, height=100)  # fmt: skip
    rows = [latency, failure]
    if runner_data:
        rows.append(panel("llama-server runner: tokens/s (line, left), busy slots (bars, right); red: a busy slot without progress "
                          "or no answer to /slots", [
            {"data": {"name": "runners"}, "mark": {"type": "bar", "color": SLOTS_COLOR, "opacity": 0.35},
             "encoding": {"x": x, "y": {"field": "slots_busy", "type": "quantitative", "scale": {"zero": True},
                                        "axis": {**RIGHT_AXIS, "tickMinStep": 1, "format": "d"}}, "tooltip": runner_tips}},
            {"data": {"name": "runners"}, "mark": {"type": "line", "color": TOKENS_COLOR, "strokeWidth": 1.8, "point": {"size": 10}},
             "encoding": {"x": x, "y": {"field": "tokens_per_s", "type": "quantitative", "scale": {"zero": True}, "axis": LEFT_AXIS},
                          "tooltip": runner_tips}},
            {"data": {"name": "runners"}, "transform": [{"filter": "datum.problem != null"}],
             "mark": {"type": "rule", "color": charts.FAILURE_RED, "strokeWidth": 3},
             "encoding": {"x": x, "y": {"value": 0}, "y2": {"value": 14}, "tooltip": runner_tips}},
        ], x, independent_y=True, height=110))  # fmt: skip
    memory = panel("Free memory (GB left, pages right; lowest per bucket)" + tag, [
        {"data": {"name": "telemetry"}, "mark": {"type": "line", "color": MEMORY_COLOR, "strokeWidth": 1.8, "point": {"size": 10}},
         "encoding": {"x": x, "y": {"field": "free_gb", "type": "quantitative", "scale": {"zero": True}, "axis": LEFT_AXIS},
                      "tooltip": mem_tips}},
        {"data": {"name": "telemetry"}, "mark": {"type": "line", "opacity": 0},
         "encoding": {"x": x, "y": {"field": "pages_free", "type": "quantitative", "scale": {"zero": True},
                                    "axis": {**RIGHT_AXIS, "format": "~s"}}}},
    ], x, independent_y=True)  # fmt: skip
    x_last = _x(domain, True, True)
    swap = panel("Swap-outs per minute (bars) and memory pressure 0-100 (line)" + tag, [
        {"data": {"name": "telemetry"}, "mark": {"type": "bar", "color": SWAP_COLOR, "opacity": 0.8},
         "encoding": {"x": x_last, "y": {"field": "swapouts_per_min", "type": "quantitative", "scale": {"zero": True},
                                         "axis": {**LEFT_AXIS, "format": "~s"}}, "tooltip": swap_tips}},
        {"data": {"name": "telemetry"}, "mark": {"type": "line", "color": PRESSURE_COLOR, "strokeWidth": 1.6, "interpolate": "step-after"},
         "encoding": {"x": x_last, "y": {"field": "pressure", "type": "quantitative", "scale": {"domain": [0, 100]}, "axis": RIGHT_AXIS},
                      "tooltip": swap_tips}},
    ], x_last, independent_y=True)  # fmt: skip
    overview = {
        "title": _title("Trials per minute: drag here to zoom every panel, double-click to reset"),
        "height": 60, "width": "container", "data": {"name": "trials"},
        "params": [{"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}}],
        "mark": {"type": "area", "color": charts.TRIALS_GREY, "opacity": 0.6, "interpolate": "step-after"},
        "encoding": {"x": {"field": charts.TIME_FIELD, "type": "temporal", "scale": {"type": "utc"},
                           "axis": {"format": "%H:%M", "title": "time (UTC)", "labelOverlap": True}},
                     "y": {"field": "trials", "type": "quantitative", "axis": {**LEFT_AXIS, "tickCount": 2}},
                     "tooltip": [{"field": "when", "title": "bucket"}, {"field": "trials", "format": ","}]},
    }  # fmt: skip
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "datasets": {"trials": _clean_records(trials), "telemetry": _clean_records(telemetry), "markers": markers,
                     "runners": runner_data, "bounds": [{charts.TIME_FIELD: domain[0]}, {charts.TIME_FIELD: domain[1]}]},
        "vconcat": [*rows, memory, swap, overview],
        "spacing": 16,
        "resolve": {"scale": {"x": "independent", "color": "independent"}},
        "config": {"axis": {"labelFontSize": 11, "titleFontSize": 11, "titleFontWeight": "normal", "titleColor": "#555555"},
                   "view": {"strokeWidth": 0}},
    }  # fmt: skip
