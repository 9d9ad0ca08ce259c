"""Chart builders for the pages (no Streamlit here: pages only render what this returns).

Every time chart is a stack of panels on ONE time axis, built here as plain Vega-Lite:
- one x domain: the range widened to whole buckets (`time_domain`), pinned in every panel by
  two invisible "bounds" points, with every bucket, row and marker inside it; the brush on the
  bottom strip narrows every panel at once (`"domain": {"param": "zoom"}`), and the strip itself
  spans the same domain;
- one pixel scale: every panel is the container's width (Streamlit sets each panel's width), the
  x scale has no padding (bars would otherwise inset their panel), and y axes are drawn inside
  the plot with a fixed label width, so no tick label, and no right axis, moves a plot area;
- one tick set, labelled so that two ticks never read the same at any zoom (`time_label_expr`).
Buckets are bars from their start to their end (`minute` to `minute_end`); lines put a bucket's
value at its middle (`mid`): bucket edges line up from panel to panel. Markers (state changes,
recovery actions) are dashed rules on every panel; above the top panel their labels form an
axis from which Vega drops any label that would overlap another or stick out of the plot
(`marker_label_axis`): never overprinted, never clipped, each still in its rule's tooltip.
Legends sit above the plot; empty layers are left out (Vega warns on an empty extent).
Charts render as SVG (`usermeta`), whatever their number of marks.

`timeline_chart()` is the Timeline page's chart (an Altair chart made from the spec);
oasis_ops.sampler.livechart builds the Live page's from the same pieces.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import pandas as pd

# Colours: failure is always red; latency percentiles are two blues that stay apart in grey print.
FAILURE_RED = "#d62728"
P50_COLOR = "#1f77b4"
P95_COLOR = "#ff7f0e"
P99_COLOR = "#9467bd"
TRIALS_GREY = "#8c8c8c"
TOKENS_COLOR = "#17becf"  # llama-server runner: generated tokens per second
SLOTS_COLOR = "#7f7f7f"  # llama-server runner: busy slots
# Bar fills: the colours above as they look at 75% (failures), 35% (slots), 50% (trials) on white.
FAILURE_FILL = "#e05d5e"
SLOTS_FILL = "#d2d2d2"
TRIALS_FILL = "#c6c6c6"
# Markers: events (model state changes) and actions (evict, kill, ...). Unknown kinds get grey.
MARKER_COLORS: dict[str, str] = {
    "warning": "#ff7f0e",
    "loaded": "#2ca02c",
    "stopping": "#d62728",
    "gone": "#7f7f7f",
    "runner_pid_changed": "#9467bd",
    "ollama_unreachable": "#d62728",
    "ollama_back": "#2ca02c",
    "pressure": "#e377c2",
    "runner_no_progress": "#d62728",
    "runner_progress": "#2ca02c",
    "runner_not_answering": "#d62728",
    "runner_answering": "#2ca02c",
    "action": "#6a3d9a",
    "evict": "#6a3d9a",
    "hard_kill": "#6a3d9a",
    "recover": "#6a3d9a",
    "concurrency": "#17becf",
    "pause": "#17becf",
    "resume": "#17becf",
}
DEFAULT_MARKER_COLOR = "#555555"

Spec = dict[str, Any]
TIME_FIELD = "minute"  # a bucket's start, and a marker's time (epoch ms)
END_FIELD = "minute_end"  # a bucket's end
MID_FIELD = "mid"  # a bucket's middle: where a line draws the bucket's value
PANEL_WIDTH = "container"  # Streamlit sets every panel to the container's width
Y_LABEL_LIMIT = 44  # px: no y tick label is wider (a longer one ends in "…")
MARKER_LABEL_LIMIT = 180  # px per marker label
MAX_MARKER_LABELS = 200  # labels on the marker axis (the newest); every marker keeps its rule
SHORT_SPAN_MS = 20 * 3_600_000  # up to this span, time labels need no date
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
SVG = {"embedOptions": {"renderer": "svg"}}  # usermeta: SVG whatever the number of marks
CONFIG: Spec = {
    "axis": {"labelFontSize": 11, "titleFontSize": 11, "titleFontWeight": "normal", "titleColor": "#555555"},
    "view": {"strokeWidth": 0},
}
# The invisible points pinning a panel to the domain: no size, so they add nothing to its bounds.
BOUNDS_MARK: dict[str, Any] = {"type": "point", "opacity": 0, "size": 0, "strokeWidth": 0}
BOUNDS = {"name": "bounds"}  # the datasets every spec has: the domain's two ends, and the markers
MARKERS = {"name": "markers"}


# --- time: domain, scale, axis ------------------------------------------------------------------------
def epoch_ms(value: Any) -> int:
    """Epoch milliseconds of a datetime or pandas Timestamp (naive = UTC)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1_000_000)


def ms_list(values: Any) -> list[int]:
    """Epoch milliseconds (Vega's time unit) of a column, whatever its datetime resolution."""
    series = pd.to_datetime(pd.Series(values), utc=True)
    return [int(v) for v in series.dt.as_unit("ms").astype("int64")]


def time_domain(start: Any, end: Any, bucket_s: float = 60) -> tuple[int, int]:
    """[start, end) widened to whole buckets (and whole minutes), in epoch ms: every epoch-aligned
    bucket holding a moment of the range lies inside, so no bucket, and no panel, reaches out."""
    step = max(60_000, int(bucket_s * 1000))
    lo, hi = epoch_ms(start), epoch_ms(end)
    lo = lo // step * step
    return lo, max(-(-hi // step) * step, lo + step)


def time_label_expr(span_ms: float) -> str:
    """A time tick's label, as precise as the tick (00:41, 00:41:30, 00:41:30.500, the date at
    midnight), with the date on every label when the chart spans more than SHORT_SPAN_MS. Two
    ticks never read the same at any zoom: each label has every non-zero field of its tick, and
    zooming only narrows the span."""
    day = "%b %d " if span_ms > SHORT_SPAN_MS else ""
    v = "datum.value"

    def fmt(spec: str) -> str:
        return f"utcFormat({v}, '{spec}')"

    return (f"utcmilliseconds({v}) ? {fmt(day + '%H:%M:%S.%L')} : utcseconds({v}) ? {fmt(day + '%H:%M:%S')} : "
            f"(utchours({v}) || utcminutes({v})) ? {fmt(day + '%H:%M')} : {fmt('%b %d')}")  # fmt: skip


def time_axis(span_ms: float, *, labels: bool = True, title: str | None = None) -> Spec:
    """A panel's x axis: grid at the shared ticks; labels that never repeat, overlap or stick out."""
    return {"orient": "bottom", "title": title, "labels": labels, "labelExpr": time_label_expr(span_ms), "labelOverlap": True,
            "labelSeparation": 6, "labelFlush": True, "labelBound": True, "grid": True, "labelColor": "#555555"}  # fmt: skip


def time_scale(brushed: bool = True) -> Spec:
    """UTC, no padding; zoomed by the brush (unbrushed: the data's extent, i.e. the domain)."""
    scale: Spec = {"type": "utc", "padding": 0}
    if brushed:
        scale["domain"] = {"param": "zoom"}
    return scale


def x_enc(field: str = TIME_FIELD, axis: Spec | None = None, *, brushed: bool = True) -> Spec:
    """A layer's x encoding on the panel's time scale; only one layer per panel draws the axis."""
    return {"field": field, "type": "temporal", "scale": time_scale(brushed), "axis": axis}


def x2_enc(field: str = END_FIELD) -> Spec:
    return {"field": field}


def bar_mark(color: str) -> Spec:
    """A bucket's bar: opaque, outlined in its own colour, so adjacent buckets show no seams."""
    return {"type": "bar", "color": color, "stroke": color, "strokeWidth": 0.5, "clip": True}


Y_ZERO: Spec = {"datum": 0}  # a bar's foot: bars with x and x2 are otherwise read as ranged along x


# --- y, titles, legends -------------------------------------------------------------------------------
def y_axis(side: str = "left", *, fmt: str | None = None, tick_count: int | None = None,
           tick_min_step: float | None = None) -> Spec:  # fmt: skip
    """A y axis inside the plot (each label above its grid line, hugging the edge), labels at
    most Y_LABEL_LIMIT px wide: a panel is exactly its container's width, whatever its labels."""
    axis: Spec = {"title": None, "orient": side, "labelAlign": "left" if side == "left" else "right",
                  "labelBaseline": "bottom", "labelPadding": -2, "tickSize": 0, "domain": False,
                  "labelColor": "#777777" if side == "left" else "#999999", "labelFontSize": 10,
                  "labelLimit": Y_LABEL_LIMIT, "labelFlush": False}  # fmt: skip
    if side == "right":
        axis["grid"] = False
    if fmt is not None:
        axis["format"] = fmt
    if tick_count is not None:
        axis["tickCount"] = tick_count
    if tick_min_step is not None:
        axis["tickMinStep"] = tick_min_step
    return axis


def y_scale(values: Iterable[Any] | None = None, *, at_least: float = 1.0) -> Spec:
    """Zero-based, from the data; never empty: when `values` has nothing above zero (all zeros,
    or no data) the axis is a plain 0..`at_least`, never 'NaN'. (Decided here rather than with
    Vega-Lite's `unionWith`, which warns when two layers share the scale.)"""
    finite = [float(v) for v in (values if values is not None else []) if v is not None and v == v]
    if finite and max(finite) > 0:
        return {"zero": True}
    return {"zero": True, "domain": [0, at_least]}


def column(rows: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    return [r.get(field) for r in rows]


def y_enc(field: str, axis: Spec, scale: Spec) -> Spec:
    return {"field": field, "type": "quantitative", "scale": scale, "axis": axis}


def title(text: str) -> Spec:
    return {"text": text, "anchor": "start", "fontSize": 12, "fontWeight": "normal", "color": "#333333", "offset": 4}


def top_legend() -> Spec:
    """A horizontal legend above the plot, under the panel's title: never over the data."""
    return {"orient": "top", "direction": "horizontal", "title": None, "labelFontSize": 11, "symbolStrokeWidth": 3,
            "offset": 2, "padding": 0}  # fmt: skip


# --- markers ------------------------------------------------------------------------------------------
MARKER_TOOLTIP = [{"field": "when", "title": "at"}, {"field": "kind"}, {"field": "label"}]
MARKER_RULE = {"type": "rule", "strokeDash": [4, 3], "strokeWidth": 1.5}
MARKER_SYMBOL = {"type": "point", "shape": "triangle-down", "filled": True, "size": 50, "opacity": 1, "clip": True}


def marker_rows(markers: pd.DataFrame | None, domain: tuple[int, int] | None = None) -> list[Spec]:
    """Markers (columns ts, kind, label) as rows: `minute` (epoch ms), when, kind, label, colour;
    only those inside `domain` (a marker outside would widen its panels' time scale)."""
    if markers is None or markers.empty:
        return []
    times = pd.to_datetime(markers["ts"], utc=True)
    rows: list[Spec] = []
    for ts, ms, kind, label in zip(times, ms_list(markers["ts"]), markers["kind"].astype(str),
                                   markers["label"].astype(str), strict=True):  # fmt: skip
        if domain is not None and not domain[0] <= ms <= domain[1]:
            continue
        rows.append({TIME_FIELD: ms, "when": ts.strftime("%H:%M:%S UTC"), "kind": kind, "label": label,
                     "color": MARKER_COLORS.get(kind, DEFAULT_MARKER_COLOR)})  # fmt: skip
    rows.sort(key=lambda r: int(r[TIME_FIELD]))
    return rows


def _js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


LABEL_CHAR_PX = 6.5  # a marker label's width per character at font size 10 (a generous estimate)
MIN_CHART_PX = 700  # the narrowest chart the labels are spaced for (the Live/Timeline main column)


def spaced_labels(times: Sequence[int], labels: Sequence[str], span_ms: float, *, width_px: float = MIN_CHART_PX) -> list[str]:
    """Labels right-aligned at their times, greedily kept left to right only where one does not
    reach the previous kept one on a chart `width_px` wide ('' for the others): decided here as
    well as by Vega's own overlap removal, which a re-render with new data can skip."""
    ms_per_px = max(span_ms, 1.0) / width_px
    out: list[str] = []
    last_end: float | None = None
    for t, label in zip(times, labels, strict=True):
        start = t - (len(label) * LABEL_CHAR_PX + 4) * ms_per_px
        if last_end is None or start >= last_end:
            out.append(label)
            last_end = t
        else:
            out.append("")
    return out


def marker_label_axis(rows: Sequence[Mapping[str, Any]], span_ms: float | None = None) -> Spec:
    """An x axis above the top panel: its ticks are the markers, its labels theirs (markers at
    the same instant share one). Labels that would overlap on a MIN_CHART_PX-wide chart of
    `span_ms` are left out (spaced_labels); Vega also drops a label that would overlap one
    already placed (`greedy`) or stick out of the plot (`labelBound`): never overprinted, never
    clipped; every marker keeps its rule and its tooltip."""
    by_time: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_time.setdefault(int(row[TIME_FIELD]), []).append(row)
    times = sorted(by_time)[-MAX_MARKER_LABELS:]
    labels = [" · ".join(dict.fromkeys(str(r["label"]) for r in by_time[t])) for t in times]
    if span_ms is not None:
        labels = spaced_labels(times, labels, span_ms)
    colors = [str(by_time[t][0]["color"]) for t in times]
    index = f"indexof({_js(times)}, +datum.value)"
    # `values` as an expression: plain numbers on a time axis compile to `datetime(ms)` calls,
    # which Streamlit's CSP-safe expression interpreter reads as a year (no tick survives).
    return {"orient": "top", "values": {"expr": _js(times)}, "title": None, "grid": False, "domain": False, "ticks": True, "tickSize": 4,
            "tickColor": {"expr": f"{_js(colors)}[{index}]"}, "labelColor": {"expr": f"{_js(colors)}[{index}]"},
            "labelExpr": f"{_js(labels)}[{index}]", "labelAlign": "right", "labelAngle": 0, "labelPadding": 1,
            "labelFontSize": 10, "labelLimit": MARKER_LABEL_LIMIT, "labelOverlap": "greedy", "labelSeparation": 4,
            "labelBound": True, "labelFlush": False, "zindex": 1}  # fmt: skip


def marker_layers(rows: Sequence[Mapping[str, Any]] | None, name: str = "panel", *, with_text: bool = False,
                  data: Mapping[str, Any] = MARKERS) -> list[Spec]:  # fmt: skip
    """A dashed rule per marker on a panel's time scale; `with_text` (the top panel): a small
    triangle at the top of each rule is its hover target (finish_panel adds the label axis)."""
    if not rows:
        return []
    kinds = sorted({str(r["kind"]) for r in rows})
    color = {"field": "kind", "type": "nominal", "legend": None,
             "scale": {"domain": kinds, "range": [MARKER_COLORS.get(k, DEFAULT_MARKER_COLOR) for k in kinds]}}  # fmt: skip
    layers: list[Spec] = [{"name": f"{name}_marker", "data": dict(data), "mark": dict(MARKER_RULE),
                           "encoding": {"x": x_enc(), "color": color, "tooltip": MARKER_TOOLTIP}}]  # fmt: skip
    if with_text:
        layers.append({"name": f"{name}_marker_symbol", "data": dict(data), "mark": dict(MARKER_SYMBOL),
                       "encoding": {"x": x_enc(), "y": {"value": 3}, "color": color, "tooltip": MARKER_TOOLTIP}})  # fmt: skip
    return layers


# --- panels -------------------------------------------------------------------------------------------
def has(rows: Sequence[Mapping[str, Any]], *fields: str) -> bool:
    """Whether some row has a value in one of `fields`: a layer is drawn only then (a layer
    without a single value makes Vega warn "Infinite extent for field ...")."""
    return any(r.get(f) is not None for r in rows for f in fields)


def panel(name: str, text: str, layers: Sequence[Spec], *, height: int, independent_y: bool = False) -> Spec:
    """A panel without its time axis yet (see finish_panel)."""
    resolve: Spec = {"scale": {"color": "independent", **({"y": "independent"} if independent_y else {})}}
    return {"name": name, "title": title(text), "height": height, "width": PANEL_WIDTH, "layer": list(layers), "resolve": resolve}


def _with_x_axis(layer: Spec, axis: Spec | None) -> Spec:
    return {**layer, "encoding": {**layer["encoding"], "x": {**layer["encoding"]["x"], "axis": axis}}}


def bounds_layer(name: str, *, brushed: bool = True) -> Spec:
    """Two invisible, sizeless points at the domain's ends: with nothing brushed, a panel's time
    scale is exactly the domain (every other layer lies inside it)."""
    return {"name": f"{name}_bounds", "data": dict(BOUNDS), "mark": dict(BOUNDS_MARK), "encoding": {"x": x_enc(brushed=brushed)}}


def finish_panel(spec: Spec, axis: Spec, markers: Sequence[Mapping[str, Any]], *, with_text: bool = False,
                 span_ms: float | None = None) -> Spec:  # fmt: skip
    """Pins a panel to the shared domain (bounds_layer), adds the marker layers and gives the
    panel its time axis. The panel's `name` prefixes its layers' names (the browser tests find
    the marks by them).

    Vega-Lite (6.5) draws a layered panel's x axis only if all of its layers declare the same
    one (one `axis: null` and none is drawn), so every layer gets `axis`. The top panel also
    carries the marker label axis, so its x axes are resolved independently: `axis` on one layer
    with a y scale (the bounds layer gets one if no other has), none on the others. (A layer
    without a y scale declares a `height` signal for its x axis, and two of them in one panel are
    a "Duplicate signal name" error.)"""
    name = str(spec.pop("name", "panel"))
    layers = [bounds_layer(name), *spec["layer"], *marker_layers(markers, name, with_text=with_text)]
    if not (with_text and markers):
        return {**spec, "layer": [_with_x_axis(layer, axis) for layer in layers]}
    carrier = next((n for n, layer in enumerate(layers) if "field" in layer["encoding"].get("y", {})), None)
    if carrier is None:  # nothing drawn yet: a constant y gives the bounds layer a y scale
        carrier = 0
        layers[0] = {**layers[0], "encoding": {**layers[0]["encoding"], "y": {"datum": 0, "type": "quantitative", "axis": None}}}
    out = []
    for n, layer in enumerate(layers):
        if n == carrier:
            out.append(_with_x_axis(layer, axis))
        elif layer.get("name") == f"{name}_marker":
            out.append(_with_x_axis(layer, marker_label_axis(markers, span_ms)))
        else:
            out.append(_with_x_axis(layer, None))
    return {**spec, "layer": out, "resolve": {**spec.get("resolve", {}), "axis": {"x": "independent"}}}


TRIAL_TIPS: list[Spec] = [
    {"field": "when", "title": "bucket"}, {"field": "trials", "format": ","}, {"field": "failures", "format": ","},
    {"field": "failure_rate", "title": "failure rate", "format": ".1%"},
    {"field": "p50_s", "title": "p50 (s)", "format": ".2f"}, {"field": "p95_s", "title": "p95 (s)", "format": ".2f"},
]  # fmt: skip


def latency_layers(data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, log_scale: bool = False,
                   points: bool = False, hover: bool = False) -> list[Spec]:  # fmt: skip
    """p50 and p95 in seconds at each bucket's middle (gaps where a bucket has no latency), the
    legend above the plot; `hover`: a rule following the pointer shows a bucket's numbers."""
    if not has(rows, "p50_s", "p95_s"):
        return []
    mark: Spec = {"type": "line", "strokeWidth": 1.6, "interpolate": "monotone", "clip": True}
    if points:
        mark["point"] = {"size": 12}
    scale = {"type": "log"} if log_scale else y_scale(column(rows, "p95_s"))
    lines = {
        "name": "latency_lines", "data": dict(data), "mark": mark,
        "transform": [{"fold": ["p50_s", "p95_s"], "as": ["series", "seconds"]},
                      {"calculate": "replace(datum.series, '_s', '')", "as": "series"}],
        "encoding": {"x": x_enc(MID_FIELD), "y": y_enc("seconds", y_axis(tick_count=4), scale),
                     "color": {"field": "series", "type": "nominal", "legend": top_legend(),
                               "scale": {"domain": ["p50", "p95"], "range": [P50_COLOR, P95_COLOR]}},
                     "tooltip": TRIAL_TIPS},
    }  # fmt: skip
    return [lines, hover_layer("latency", data, TRIAL_TIPS)] if hover else [lines]


def failure_layers(data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[Spec]:
    """Failure rate per bucket (timeouts + errors over trials): a red bar over the bucket."""
    if not has(rows, "failure_rate"):
        return []
    return [{"name": "failure_bars", "data": dict(data), "mark": bar_mark(FAILURE_FILL),
             "encoding": {"x": x_enc(), "x2": x2_enc(), "y2": Y_ZERO, "tooltip": TRIAL_TIPS,
                          "y": y_enc("failure_rate", y_axis(fmt="%", tick_count=4), {"domain": [0, 1]})}}]  # fmt: skip


def hover_layer(name: str, data: Mapping[str, Any], tooltip: list[Spec]) -> Spec:
    """A rule that follows the pointer to the nearest bucket and shows its numbers."""
    return {"name": f"{name}_hover", "data": dict(data),
            "params": [{"name": "hover", "select": {"type": "point", "nearest": True, "on": "pointerover", "clear": "pointerout",
                                                    "fields": [TIME_FIELD]}}],
            "mark": {"type": "rule", "color": "#999999", "strokeWidth": 1, "clip": True},
            "encoding": {"x": x_enc(MID_FIELD), "tooltip": tooltip,
                         "opacity": {"condition": {"param": "hover", "empty": False, "value": 0.6}, "value": 0}}}  # fmt: skip


def runner_problem(not_answering: Iterable[Any], stalled_slots: Iterable[Any]) -> list[str | None]:
    """Per bucket: 'not answering /slots', 'slot without progress' or None."""
    return [("not answering /slots" if bool(na) else "slot without progress" if (st or 0) > 0 else None)
            for na, st in zip(not_answering, stalled_slots, strict=True)]  # fmt: skip


RUNNER_TITLE = "llama-server runner: tokens/s (line, left), busy slots (bars, right); red band: a stall"
RUNNER_TIPS: list[Spec] = [
    {"field": "when", "title": "bucket"}, {"field": "tokens_per_s", "title": "tokens/s (mean)", "format": ",.1f"},
    {"field": "slots_busy", "title": "busy slots (max)", "format": ","}, {"field": "slots_total", "title": "slots", "format": ","},
    {"field": "tokens_in_flight", "title": "tokens in flight (max)", "format": ","},
    {"field": "stalled_for_s", "title": "longest without progress (s)", "format": ",.0f"}, {"field": "problem", "title": "problem"},
]  # fmt: skip


def runner_rows(frame: pd.DataFrame, bucket_s: float) -> list[Spec]:
    """runner_buckets() rows (minute, tokens_per_s, slots_busy, ...) as chart rows with edges."""
    if frame.empty:
        return []
    out = pd.DataFrame({
        "tokens_per_s": frame["tokens_per_s"], "slots_busy": frame["slots_busy"],
        "slots_total": frame.get("slots_total"), "tokens_in_flight": frame.get("tokens_in_flight"),
        "stalled_for_s": frame["stalled_for_s"], "problem": runner_problem(frame["not_answering"], frame["stalled_slots"].fillna(0)),
    })  # fmt: skip
    return bucket_records(out, frame[TIME_FIELD], bucket_s, "%H:%M:%S UTC")


def runner_layers(data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], problems: Mapping[str, Any] | None) -> list[Spec]:
    """Busy slots (bars over each bucket, right axis), tokens/s (line at the middle, left axis)
    and, when some bucket had one, a red band at the top of a bucket with a stall (`problems`)."""
    layers: list[Spec] = []
    if has(rows, "slots_busy"):
        layers.append({"name": "runner_slots", "data": dict(data), "mark": bar_mark(SLOTS_FILL),
                       "encoding": {"x": x_enc(), "x2": x2_enc(), "y2": Y_ZERO, "tooltip": RUNNER_TIPS,
                                    "y": y_enc("slots_busy", y_axis("right", fmt="d", tick_min_step=1), y_scale(column(rows, "slots_busy")))}})  # fmt: skip
    if has(rows, "tokens_per_s"):
        layers.append({"name": "runner_tokens", "data": dict(data),
                       "mark": {"type": "line", "color": TOKENS_COLOR, "strokeWidth": 1.8, "point": {"size": 10}, "clip": True},
                       "encoding": {"x": x_enc(MID_FIELD), "tooltip": RUNNER_TIPS,
                                    "y": y_enc("tokens_per_s", y_axis(tick_count=3), y_scale(column(rows, "tokens_per_s")))}})  # fmt: skip
    if problems is not None:
        layers.append({"name": "runner_problems", "data": dict(problems), "mark": {"type": "rect", "color": FAILURE_RED, "opacity": 0.8},
                       "encoding": {"x": x_enc(), "x2": x2_enc(), "y": {"value": 0}, "y2": {"value": 6}, "tooltip": RUNNER_TIPS}})  # fmt: skip
    return layers


def runner_panel(frame: pd.DataFrame, x: Spec | None = None, *, height: int = 110, bucket_s: float | None = None) -> Spec:
    """The llama-server runner panel (tokens/s, busy slots, stalls) for timeline_chart's
    `extra_panels`, its rows inline. `frame`: oasis_ops.sampler.views.runner_buckets();
    `x` (the panel's x encoding, given by timeline_chart) is not needed: every panel shares it."""
    rows = runner_rows(frame, bucket_s or bucket_width_s(frame[TIME_FIELD]))
    problems = [r for r in rows if r["problem"] is not None]
    return panel("runner", RUNNER_TITLE, runner_layers({"values": rows}, rows, {"values": problems} if problems else None),
                 height=height, independent_y=True)


def overview_panel(data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], axis: Spec, text: str, *,
                   height: int = 60) -> Spec:  # fmt: skip
    """Trials per bucket over the whole domain (the same domain as every panel). The brush that
    zooms the other panels is the bounds layer's: it exists whether or not there are trials."""
    bounds = {**bounds_layer("overview", brushed=False), "params": [{"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}}]}
    layers = [bounds]
    if rows:
        layers.append({"name": "overview_bars", "data": dict(data), "mark": bar_mark(TRIALS_FILL),
                       "encoding": {"x": x_enc(brushed=False), "x2": x2_enc(), "y2": Y_ZERO,
                                    "y": y_enc("trials", y_axis(tick_count=2), y_scale(column(rows, "trials"))),
                                    "tooltip": [{"field": "when", "title": "bucket"}, {"field": "trials", "format": ","}]}})  # fmt: skip
    return {"title": title(text), "height": height, "width": PANEL_WIDTH, "layer": [_with_x_axis(layer, axis) for layer in layers]}


def stack(rows: Sequence[Spec], overview: Spec, datasets: Mapping[str, Any], domain: tuple[int, int],
          markers: Sequence[Mapping[str, Any]]) -> Spec:  # fmt: skip
    """The top-level spec: panels over the overview strip, each with its own x scale (all on the
    same domain and zoomed by the same brush)."""
    return {"$schema": SCHEMA, "usermeta": SVG,
            "datasets": {**datasets, "bounds": [{TIME_FIELD: domain[0]}, {TIME_FIELD: domain[1]}], "markers": list(markers)},
            "vconcat": [*rows, overview], "spacing": 16,
            "resolve": {"scale": {"x": "independent", "color": "independent"}}, "config": CONFIG}  # fmt: skip


# --- data ---------------------------------------------------------------------------------------------
def bucket_width_s(minutes: Any, default: float = 60.0) -> float:
    """The bucket width of a per-bucket column (its smallest step)."""
    stamps = pd.to_datetime(pd.Series(minutes), utc=True).sort_values()
    steps = stamps.diff().dropna()
    steps = steps[steps > pd.Timedelta(0)]
    return float(steps.min().total_seconds()) if not steps.empty else default


def bucket_records(values: pd.DataFrame, minutes: Any, bucket_s: float, when_format: str = "%Y-%m-%d %H:%M UTC") -> list[Spec]:
    """JSON rows (NaN -> None) of `values` with each bucket's start, end and middle (epoch ms)
    and a readable `when`."""
    starts = ms_list(minutes)
    width = int(bucket_s * 1000)
    out = values.reset_index(drop=True).copy()
    out[TIME_FIELD] = starts
    out[END_FIELD] = [s + width for s in starts]
    out[MID_FIELD] = [s + width // 2 for s in starts]
    out["when"] = pd.to_datetime(pd.Series(minutes), utc=True).dt.strftime(when_format).to_list()
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in out.to_dict("records")]


def prepare_rollup(rollup: pd.DataFrame) -> pd.DataFrame:
    """Only the columns the charts need, latency in seconds, a readable time label for tooltips."""
    frame = pd.DataFrame(
        {
            TIME_FIELD: pd.to_datetime(rollup[TIME_FIELD], utc=True),
            "trials": rollup["trials"].astype("int64"),
            "failures": (rollup["timeouts"] + rollup["errors"]).astype("int64"),
            "failure_rate": rollup["failure_rate"].astype("float64"),
            "p50_s": rollup["p50_ms"].astype("float64") / 1000.0,
            "p95_s": rollup["p95_ms"].astype("float64") / 1000.0,
        }
    )
    frame["when"] = frame[TIME_FIELD].dt.strftime("%Y-%m-%d %H:%M UTC")
    return frame


def trial_rows(rollup: pd.DataFrame, bucket_s: float) -> list[Spec]:
    """The rollup as chart rows: trials, failures, failure rate, p50/p95 in seconds, edges."""
    frame = prepare_rollup(rollup)
    return bucket_records(frame.drop(columns=[TIME_FIELD, "when"]), frame[TIME_FIELD], bucket_s)


def inside(rows: Sequence[Spec], domain: tuple[int, int]) -> list[Spec]:
    """Rows whose bucket lies in the domain (one outside would widen its panel's time scale)."""
    return [r for r in rows if domain[0] <= int(r[TIME_FIELD]) and int(r.get(END_FIELD) or r[TIME_FIELD]) <= domain[1]]


# --- the Timeline chart -------------------------------------------------------------------------------
def timeline_spec(
    rollup: pd.DataFrame,
    markers: pd.DataFrame | None = None,
    *,
    log_latency: bool = False,
    panels: Sequence[str] = ("latency", "failure"),
    extra_panels: Sequence[Callable[[Spec], Spec]] = (),
    domain: tuple[datetime, datetime] | None = None,
    bucket_s: float | None = None,
) -> Spec:
    """The Timeline's Vega-Lite spec (see timeline_chart)."""
    width_s = float(bucket_s) if bucket_s else bucket_width_s(rollup[TIME_FIELD])
    trials = trial_rows(rollup, width_s)
    if domain is None:
        now = pd.Timestamp.now(tz="UTC")
        first = pd.Timestamp(trials[0][TIME_FIELD], unit="ms", tz="UTC") if trials else now
        last = pd.Timestamp(trials[-1][END_FIELD], unit="ms", tz="UTC") if trials else now
        domain = (first, last)
    dom = time_domain(domain[0], domain[1], width_s)
    trials = inside(trials, dom)
    marks = marker_rows(markers, dom)
    span = dom[1] - dom[0]
    data = {"name": "trials"}
    built: list[Spec] = []
    for name in panels:
        if name == "latency":
            built.append(panel("latency", "Latency (s)", latency_layers(data, trials, log_scale=log_latency, hover=True), height=220))
        elif name == "failure":
            built.append(panel("failure", "Failure rate (timeouts + errors)", failure_layers(data, trials), height=140))
        else:
            raise ValueError(f"unknown panel {name!r}")
    for n, build in enumerate(extra_panels):
        extra = build(x_enc())
        extra.setdefault("name", f"extra{n}")
        built.append(extra)
    rows = [finish_panel(p, time_axis(span, labels=(n == len(built) - 1)), marks, with_text=(n == 0), span_ms=span)
            for n, p in enumerate(built)]
    overview = overview_panel(data, trials, time_axis(span, title="time (UTC)"), "Trials per bucket: drag here to zoom, double-click to reset")
    return stack(rows, overview, {"trials": trials}, dom, marks)


def timeline_chart(
    rollup: pd.DataFrame,
    markers: pd.DataFrame | None = None,
    *,
    log_latency: bool = False,
    panels: Sequence[str] = ("latency", "failure"),
    extra_panels: Sequence[Callable[[Spec], Spec]] = (),
    domain: tuple[datetime, datetime] | None = None,
    bucket_s: float | None = None,
) -> alt.VConcatChart:
    """Latency (p50/p95) over failure rate over a trials overview, one shared UTC time axis.

    `rollup` is the trial reader's rollup (minute, trials, ok, timeouts, errors, failure_rate,
    p50_ms, p95_ms, ...), in buckets of `bucket_s` (default: the rollup's own step); `domain` the
    range shown (default: the rollup's buckets), widened to whole buckets. Dragging on the
    bottom strip zooms every panel; markers (ts, kind, label) are dashed rules on every panel,
    labelled above the top one. `extra_panels` are callables `(x) -> panel spec` added between
    the failure panel and the strip (runner_panel, or memory or swap panels) on the same axis.
    """
    spec = timeline_spec(rollup, markers, log_latency=log_latency, panels=panels, extra_panels=extra_panels,
                         domain=domain, bucket_s=bucket_s)  # fmt: skip
    # Wrapped, not parsed: alt.VConcatChart.from_dict() matches every nested dict against the
    # schema (~0.25 s for a day of minutes); the panels stay plain dicts inside a LayerSpec.
    rest = {k: v for k, v in spec.items() if k not in ("vconcat", "$schema")}
    return alt.VConcatChart(vconcat=[alt.LayerSpec(**p) for p in spec["vconcat"]], **rest)


# --- the Diagnostics chart ----------------------------------------------------------------------------
PHASE_COLORS = {"image encode": "#1f77b4", "generation (eval)": "#ff7f0e"}


def timing_chart(frame: pd.DataFrame, windows: Sequence[tuple[Any, Any]] = (), *, height: int = 260) -> alt.LayerChart:
    """Image-encode and eval milliseconds per request over time (log scale), incident windows
    shaded. `frame`: oasis_ops.diagnosis.views.timing_frame() (ts, phase, ms). A shading layer
    only when there is a window, no dots layer without dots (an empty layer makes Vega warn)."""
    rows: list[Spec] = [{"ts": ms, "phase": str(phase), "ms": float(value)}
                        for ms, phase, value in zip(ms_list(frame["ts"]), frame["phase"], frame["ms"], strict=True)] if not frame.empty else []  # fmt: skip
    spans = [{"start": epoch_ms(a), "end": epoch_ms(b)} for a, b in windows]
    times: list[int] = [int(r["ts"]) for r in rows] + [t for s in spans for t in (s["start"], s["end"])]
    span_ms = (max(times) - min(times)) if times else 0
    axis = {"title": "time (UTC)", "labelExpr": time_label_expr(span_ms), "labelOverlap": True, "labelFlush": True, "labelBound": True}
    x = {"field": "ts", "type": "temporal", "scale": {"type": "utc"}, "axis": axis}
    layers: list[Spec] = []
    if spans:
        layers.append({"data": {"values": spans}, "mark": {"type": "rect", "color": FAILURE_RED, "opacity": 0.12},
                       "encoding": {"x": {**x, "field": "start"}, "x2": {"field": "end"}}})  # fmt: skip
    if rows:
        layers.append({"data": {"values": rows}, "mark": {"type": "circle", "size": 14, "opacity": 0.6},
                       "encoding": {"x": x, "y": {"field": "ms", "type": "quantitative", "title": "milliseconds (log)", "scale": {"type": "log"}},
                                    "color": {"field": "phase", "type": "nominal", "title": None, "legend": top_legend(),
                                              "scale": {"domain": list(PHASE_COLORS), "range": list(PHASE_COLORS.values())}},
                                    "tooltip": [{"field": "ts", "type": "temporal", "title": "time (UTC)", "format": "%H:%M:%S"},
                                                {"field": "phase"}, {"field": "ms", "format": ",.0f"}]}})  # fmt: skip
    units = [alt.UnitSpec(**{**layer, "encoding": alt.Encoding(**layer["encoding"])}) for layer in layers]
    return alt.LayerChart(layer=units, height=height, config=CONFIG)
