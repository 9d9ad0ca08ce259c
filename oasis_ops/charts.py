"""Altair chart builders for the pages (no Streamlit here: pages only render what this returns).

Every time chart shares one UTC time axis on the field `minute`, so pages can stack panels
(latency, failure rate, memory, swap-outs, ...) and draw the same markers (state changes,
recovery actions) on each. An x-brush on the overview strip zooms every panel at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
# Markers: events (model state changes) and actions (evict, kill, ...). Unknown kinds get grey.
MARKER_COLORS: dict[str, str] = {
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

# What a panel builder may return (alt.layer is typed as LayerChart | FacetChart).
ChartLike = alt.Chart | alt.LayerChart | alt.FacetChart

TIME_FIELD = "minute"
PANEL_WIDTH: int | str = "container"  # concatenated charts need one explicit width so their x axes line up


def time_x(brush: alt.Parameter | None = None, *, title: str | None = "time (UTC)", labels: bool = True) -> alt.X:
    """The shared x encoding: UTC time; zoomed to `brush` when given (empty brush: everything)."""
    scale = alt.Scale(type="utc", domain=brush) if brush is not None else alt.Scale(type="utc")
    # tickMinStep: at most one tick a minute, so a zoomed axis never prints a minute twice.
    axis = alt.Axis(format="%H:%M", title=title, labels=labels, labelOverlap=True, grid=True, tickMinStep=60_000)
    return alt.X(f"{TIME_FIELD}:T", scale=scale, axis=axis)


def inner_y_axis(fmt: str | None = None, *, tick_count: int | None = None) -> alt.Axis:
    """A y axis drawn inside the plot, so every panel is exactly as wide as its container.

    Streamlit stretches each panel of a vconcat to the container width and Vega puts the axis
    outside that, which would overflow; labels inside (titles above, as panel titles) fit.
    """
    kwargs: dict[str, Any] = {}
    if fmt is not None:
        kwargs["format"] = fmt
    if tick_count is not None:
        kwargs["tickCount"] = tick_count
    return alt.Axis(
        title=None,
        orient="left",
        labelAlign="left",
        labelBaseline="bottom",
        labelPadding=-2,
        tickSize=0,
        domain=False,
        labelColor="#777777",
        labelFontSize=10,
        **kwargs,
    )


def panel_title(text: str) -> alt.TitleParams:
    return alt.TitleParams(text, anchor="start", fontSize=12, fontWeight="normal", color="#333333", offset=4)


def x_brush(name: str = "zoom") -> alt.Parameter:
    """An interval selection on x only: drag on the overview to zoom every linked panel."""
    return alt.selection_interval(encodings=["x"], name=name)


def _time_label(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts, utc=True)
    return ts.dt.strftime("%Y-%m-%d %H:%M UTC")


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
    frame["when"] = _time_label(frame[TIME_FIELD])
    return frame


def _hover_layer(frame: pd.DataFrame, x: alt.X, tooltip: Sequence[alt.Tooltip], hover: alt.Parameter) -> alt.Chart:
    """A vertical rule that follows the pointer to the nearest bucket and shows `tooltip`."""
    return (
        alt.Chart(frame)
        .mark_rule(color="#999999", strokeWidth=1, clip=True)
        .encode(
            x=x,
            opacity=alt.condition(hover, alt.value(0.6), alt.value(0.0)),
            tooltip=list(tooltip),
        )
        .add_params(hover)
    )


def _tooltips() -> list[alt.Tooltip]:
    return [
        alt.Tooltip("when:N", title="bucket"),
        alt.Tooltip("trials:Q", title="trials", format=","),
        alt.Tooltip("failures:Q", title="failures", format=","),
        alt.Tooltip("failure_rate:Q", title="failure rate", format=".1%"),
        alt.Tooltip("p50_s:Q", title="p50 (s)", format=".2f"),
        alt.Tooltip("p95_s:Q", title="p95 (s)", format=".2f"),
    ]


def latency_panel(
    frame: pd.DataFrame,
    x: alt.X,
    *,
    log_scale: bool = False,
    height: int = 220,
    hover: alt.Parameter | None = None,
) -> ChartLike:
    """p50 and p95 latency lines, in seconds (gaps where a bucket has no latency)."""
    long = frame.melt(id_vars=[TIME_FIELD, "when"], value_vars=["p50_s", "p95_s"], var_name="series", value_name="seconds")
    long["series"] = long["series"].str.replace("_s", "", regex=False)
    y_scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=True)
    lines = (
        alt.Chart(long)
        .mark_line(strokeWidth=1.6, interpolate="monotone", clip=True)
        .encode(
            x=x,
            y=alt.Y("seconds:Q", scale=y_scale, axis=inner_y_axis()),
            color=alt.Color(
                "series:N",
                title=None,
                scale=alt.Scale(domain=["p50", "p95"], range=[P50_COLOR, P95_COLOR]),
                # On the title line, right of "Latency (s)": never over the data.
                legend=alt.Legend(orient="none", direction="horizontal", legendX=90, legendY=-21, labelFontSize=11, symbolStrokeWidth=3),
            ),
        )
        .properties(height=height, width=PANEL_WIDTH, title=panel_title("Latency (s)"))
    )
    layers: list[alt.Chart] = [lines]
    if hover is not None:
        layers.append(_hover_layer(frame, x, _tooltips(), hover))
    return alt.layer(*layers)


def failure_panel(frame: pd.DataFrame, x: alt.X, *, height: int = 140, hover: alt.Parameter | None = None) -> ChartLike:
    """Failure rate per bucket (timeouts + errors over trials), red, 0-100%."""
    area = (
        alt.Chart(frame)
        .mark_area(color=FAILURE_RED, opacity=0.75, interpolate="step-after", line={"color": FAILURE_RED}, clip=True)
        .encode(
            x=x,
            y=alt.Y("failure_rate:Q", scale=alt.Scale(domain=[0, 1]), axis=inner_y_axis("%", tick_count=4)),
        )
        .properties(height=height, width=PANEL_WIDTH, title=panel_title("Failure rate (timeouts + errors)"))
    )
    layers: list[alt.Chart] = [area]
    if hover is not None:
        layers.append(_hover_layer(frame, x, _tooltips(), hover))
    return alt.layer(*layers)


def runner_panel(frame: pd.DataFrame, x: alt.X, *, height: int = 110) -> ChartLike:
    """A llama-server runner's tokens/s (line, left axis) over its busy slots (bars, right axis),
    red rules at the top where a busy slot made no progress or the runner did not answer /slots.
    `frame`: oasis_ops.sampler.views.runner_buckets() (minute, tokens_per_s, slots_busy, ...)."""
    data = pd.DataFrame({
        TIME_FIELD: pd.to_datetime(frame[TIME_FIELD], utc=True),
        "tokens_per_s": frame["tokens_per_s"].astype("float64"),
        "slots_busy": frame["slots_busy"].astype("float64"),
        "stalled_for_s": frame["stalled_for_s"].astype("float64"),
        "problem": [("not answering /slots" if bool(na) else "slot without progress" if (st or 0) > 0 else "")
                    for na, st in zip(frame["not_answering"], frame["stalled_slots"].fillna(0), strict=True)],
    })  # fmt: skip
    data["when"] = _time_label(data[TIME_FIELD])
    tips = [alt.Tooltip("when:N", title="bucket"), alt.Tooltip("tokens_per_s:Q", title="tokens/s (mean)", format=",.1f"),
            alt.Tooltip("slots_busy:Q", title="busy slots (max)", format=","),
            alt.Tooltip("stalled_for_s:Q", title="longest without progress (s)", format=",.0f"), alt.Tooltip("problem:N")]  # fmt: skip
    right = alt.Axis(title=None, orient="right", labelAlign="right", labelBaseline="bottom", labelPadding=-2, tickSize=0,
                     domain=False, labelColor="#999999", labelFontSize=10, grid=False, tickMinStep=1, format="d")  # fmt: skip
    bars = alt.Chart(data).mark_bar(color=SLOTS_COLOR, opacity=0.35, clip=True).encode(
        x=x, y=alt.Y("slots_busy:Q", scale=alt.Scale(zero=True), axis=right), tooltip=tips)
    line = alt.Chart(data).mark_line(color=TOKENS_COLOR, strokeWidth=1.8, point=alt.OverlayMarkDef(size=10), clip=True).encode(
        x=x, y=alt.Y("tokens_per_s:Q", scale=alt.Scale(zero=True), axis=inner_y_axis()), tooltip=tips)
    problems = alt.Chart(data).transform_filter("datum.problem != ''").mark_rule(color=FAILURE_RED, strokeWidth=3, clip=True).encode(
        x=x, y=alt.value(0), y2=alt.value(14), tooltip=tips)
    title = "llama-server runner: tokens/s (line, left), busy slots (bars, right); red: a busy slot without progress or no answer"
    return (
        alt.layer(bars, line, problems)
        .resolve_scale(y="independent")
        .properties(height=height, width=PANEL_WIDTH, title=panel_title(title))
    )


def overview_panel(frame: pd.DataFrame, brush: alt.Parameter, *, height: int = 70) -> alt.Chart:
    """Trials per bucket, full range, carrying the brush that zooms the other panels."""
    return (
        alt.Chart(frame)
        .mark_area(color=TRIALS_GREY, opacity=0.35, interpolate="step-after", line={"color": TRIALS_GREY, "strokeWidth": 0.8})
        .encode(
            x=time_x(None, title="time (UTC)"),
            y=alt.Y("trials:Q", axis=inner_y_axis(tick_count=2)),
            tooltip=[alt.Tooltip("when:N", title="bucket"), alt.Tooltip("trials:Q", format=",")],
        )
        .add_params(brush)
        .properties(height=height, width=PANEL_WIDTH, title=panel_title("Trials per bucket: drag here to zoom, double-click to reset"))
    )


def marker_layers(
    markers: pd.DataFrame | None,
    x: alt.X | None = None,
    *,
    with_text: bool = True,
    colors: Mapping[str, str] | None = None,
) -> list[alt.Chart]:
    """Vertical rules (and labels) for events/actions; `markers` has columns ts, kind, label.

    Returns chart layers to add to a panel with `alt.layer(panel, *layers)`; the rule encodes
    its x on `minute` so it shares the panel's (possibly brushed) time scale.
    """
    if markers is None or markers.empty:
        return []
    palette = {**MARKER_COLORS, **(colors or {})}
    data = pd.DataFrame(
        {
            TIME_FIELD: pd.to_datetime(markers["ts"], utc=True),
            "kind": markers["kind"].astype(str),
            "label": markers["label"].astype(str),
        }
    )
    data["when"] = pd.to_datetime(data[TIME_FIELD], utc=True).dt.strftime("%H:%M:%S UTC")
    kinds = sorted(data["kind"].unique())
    color = alt.Color(
        "kind:N",
        title="marker",
        scale=alt.Scale(domain=kinds, range=[palette.get(k, DEFAULT_MARKER_COLOR) for k in kinds]),
        legend=None,
    )
    x = x if x is not None else time_x()
    tooltip = [alt.Tooltip("when:N", title="at"), alt.Tooltip("kind:N"), alt.Tooltip("label:N")]
    rule = alt.Chart(data).mark_rule(strokeDash=[4, 3], strokeWidth=1.5, clip=True).encode(x=x, color=color, tooltip=tooltip)
    layers: list[alt.Chart] = [rule]
    if with_text:
        text = (
            alt.Chart(data)
            .mark_text(align="right", baseline="top", dx=-3, dy=2, fontSize=10, clip=True)  # left of the rule: recent markers sit at the right edge
            .encode(x=x, y=alt.value(0), text="label:N", color=color, tooltip=tooltip)
        )
        layers.append(text)
    return layers


def timeline_chart(
    rollup: pd.DataFrame,
    markers: pd.DataFrame | None = None,
    *,
    log_latency: bool = False,
    panels: Sequence[str] = ("latency", "failure"),
    extra_panels: Sequence[Any] = (),
) -> alt.VConcatChart:
    """Latency (p50/p95) over failure rate over a trials overview, one shared UTC time axis.

    `rollup` is the trial reader's rollup (minute, trials, ok, timeouts, errors, failure_rate,
    p50_ms, p95_ms, ...). Dragging on the bottom overview zooms every panel above it; markers
    (ts, kind, label) are drawn as rules on every panel, labelled on the top one.
    `extra_panels` are callables `(x) -> chart` added between the failure panel and the overview
    (other pages use it for memory or swap panels on the same zoomable axis).
    """
    frame = prepare_rollup(rollup)
    brush = x_brush()
    hover = alt.selection_point(name="hover", nearest=True, on="pointerover", fields=[TIME_FIELD], empty=False, clear="pointerout")
    rows: list[ChartLike] = []
    first = True
    for n, name in enumerate(panels):
        # Time labels under the last zoomed panel only; the overview has its own full-range axis.
        x = time_x(brush, title=None, labels=(n == len(panels) - 1 and not extra_panels))
        if name == "latency":
            panel: ChartLike = latency_panel(frame, x, log_scale=log_latency, hover=hover if first else None)
        elif name == "failure":
            panel = failure_panel(frame, x, hover=hover if first else None)
        else:
            raise ValueError(f"unknown panel {name!r}")
        layers = marker_layers(markers, x, with_text=first)
        rows.append(alt.layer(panel, *layers).resolve_scale(color="independent") if layers else panel)
        first = False
    for n, build in enumerate(extra_panels):
        x = time_x(brush, title=None, labels=(n == len(extra_panels) - 1))
        chart = build(x)
        layers = marker_layers(markers, x, with_text=False)
        rows.append(alt.layer(chart, *layers).resolve_scale(color="independent") if layers else chart)
    rows.append(overview_panel(frame, brush))
    return (
        alt.vconcat(*rows, spacing=16)
        .resolve_scale(x="independent", color="independent")
        .configure_axis(labelFontSize=11, titleFontSize=11, titleFontWeight="normal", titleColor="#555555")
        .configure_view(strokeWidth=0)
    )
