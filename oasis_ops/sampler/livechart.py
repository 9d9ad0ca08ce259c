"""The Live chart as a Vega-Lite spec, without Streamlit.

`live_chart()` stacks latency, failure rate, the runner's tokens/s and busy slots (when a
llama-server runner was read), free memory and swap-outs with pressure on one shared time axis,
markers on every panel, and a trials strip whose brush zooms every panel. The panels, the time
axis and the markers are charts.py's, shared with the Timeline (see charts.py on how every panel
lands on the same pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from oasis_ops import charts
from oasis_ops.sampler.window import LiveWindow

# --- the chart: a Vega-Lite spec built as plain data -------------------------------------------------
# Built as a dict rather than through Altair: with four layered panels, markers on each and a
# brush, Altair's object copies cost ~0.7 s per build here (bench/bench_live.py), this ~5 ms.
MEMORY_COLOR = "#2ca02c"
SWAP_COLOR = "#8c564b"
SWAP_FILL = "#a3786f"  # SWAP_COLOR at 80% on white (opaque bars: no seams between buckets)
PRESSURE_COLOR = "#e377c2"
TOKENS_COLOR = charts.TOKENS_COLOR
SLOTS_COLOR = charts.SLOTS_COLOR
PANEL_HEIGHT = 140
LEFT_AXIS = charts.y_axis("left")
RIGHT_AXIS = charts.y_axis("right")
AXIS_INSIDE = {k: v for k, v in LEFT_AXIS.items() if k not in ("orient", "labelAlign")}

MEM_TIPS = [{"field": "when", "title": "bucket"}, {"field": "free_gb", "title": "free (GB)", "format": ".2f"},
            {"field": "pages_free", "title": "free pages", "format": ","}, {"field": "page_size", "title": "page size (B)", "format": ","},
            {"field": "available_gb", "title": "available (GB)", "format": ".2f"}]  # fmt: skip
SWAP_TIPS = [{"field": "when", "title": "bucket"}, {"field": "swapouts_per_min", "title": "swap-outs/min", "format": ",.0f"},
             {"field": "pressure", "title": "pressure (max)", "format": ".1f"}]  # fmt: skip


def _telemetry_rows(window: LiveWindow) -> list[dict[str, Any]]:
    tele = window.telemetry
    values = pd.DataFrame({
        "free_gb": tele["mem_free_bytes"] / 1e9,
        "available_gb": tele["mem_available_bytes"] / 1e9,
        "pages_free": tele["pages_free"],
        "page_size": tele["page_size"],
        "swapouts_per_min": tele["swapouts_per_min"],
        "pressure": tele["pressure"],
    })  # fmt: skip
    return charts.bucket_records(values, tele["minute"], window.bucket_s, "%H:%M:%S UTC")


GPU_COLORS = ["#9467bd", "#17becf", "#bcbd22", "#7f7f7f"]
VRAM_TIPS = [{"field": "when", "title": "bucket"}, {"field": "gpu", "title": "GPU"},
             {"field": "used_gb", "title": "VRAM used (GB, most)", "format": ".2f"},
             {"field": "total_gb", "title": "VRAM total (GB)", "format": ".2f"},
             {"field": "utilization_percent", "title": "busy (%)", "format": ".0f"}]  # fmt: skip


def _gpu_rows(window: LiveWindow) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for (index, name), rows in window.gpus.groupby(["gpu_index", "name"], dropna=False, sort=True):
        values = pd.DataFrame({"used_gb": rows["used_bytes"].astype("float64") / 1e9,
                               "total_gb": rows["total_bytes"].astype("float64") / 1e9,
                               "utilization_percent": rows["utilization_percent"].astype("float64")})  # fmt: skip
        for row in charts.bucket_records(values, rows["minute"], window.bucket_s, "%H:%M:%S UTC"):
            out.append({**row, "gpu": f"GPU {index} {name}"})
    return out


def vram_panel(gpus: list[dict[str, Any]], data: dict[str, Any] | None = None, *, simulated: bool = False) -> dict[str, Any]:
    """VRAM used (the most per bucket) per GPU as lines, its total as a dashed line. `data`: a
    named dataset (the Live chart) or the rows inline (the Timeline), by default {"name": "gpus"}."""
    data = data or {"name": "gpus"}
    tag = " · SIMULATED GPU (demo)" if simulated else ""
    names = sorted({r["gpu"] for r in gpus})
    color = {"field": "gpu", "type": "nominal", "scale": {"domain": names, "range": GPU_COLORS[: len(names)] or GPU_COLORS},
             "legend": {"orient": "top-left", "title": None, "direction": "horizontal"} if len(names) > 1 else None}  # fmt: skip
    top = max((r["total_gb"] for r in gpus if r["total_gb"] is not None), default=1.0)
    y = charts.y_enc("used_gb", charts.y_axis(tick_count=4), {"domain": [0, top * 1.05], "nice": False})
    return charts.panel("vram", "GPU memory used (GB, most per bucket; dashed: total)" + tag, [
        {"name": "vram_used", "data": dict(data), "mark": {"type": "line", "strokeWidth": 1.8, "point": {"size": 10}, "clip": True},
         "encoding": {"x": charts.x_enc(charts.MID_FIELD), "y": y, "color": color, "tooltip": VRAM_TIPS}},
        {"name": "vram_total", "data": dict(data), "mark": {"type": "line", "strokeDash": [4, 3], "strokeWidth": 1, "clip": True},
         "encoding": {"x": charts.x_enc(charts.MID_FIELD), "color": color,
                      "y": {**y, "field": "total_gb"}}},
    ], height=100)  # fmt: skip


def memory_panel(telemetry: list[dict[str, Any]], data: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """Free memory per bucket (its lowest, GB on the left), free pages on the right axis."""
    layers: list[dict[str, Any]] = []
    if charts.has(telemetry, "free_gb"):
        layers.append({"name": "memory_free", "data": dict(data),
                       "mark": {"type": "line", "color": MEMORY_COLOR, "strokeWidth": 1.8, "point": {"size": 10}, "clip": True},
                       "encoding": {"x": charts.x_enc(charts.MID_FIELD), "tooltip": MEM_TIPS,
                                    "y": charts.y_enc("free_gb", charts.y_axis(tick_count=4), charts.y_scale(charts.column(telemetry, "free_gb")))}})
    if charts.has(telemetry, "pages_free"):  # an invisible line: the pages axis on the right
        layers.append({"name": "memory_pages", "data": dict(data), "mark": {"type": "line", "opacity": 0, "clip": True},
                       "encoding": {"x": charts.x_enc(charts.MID_FIELD),
                                    "y": charts.y_enc("pages_free", charts.y_axis("right", fmt="~s", tick_count=4),
                                                      charts.y_scale(charts.column(telemetry, "pages_free")))}})
    return charts.panel("memory", "Free memory (GB left, pages right; lowest per bucket)" + tag, layers,
                        height=PANEL_HEIGHT, independent_y=True)


def swap_panel(telemetry: list[dict[str, Any]], data: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """Swap-outs per minute as bars, memory pressure (0-100) as a step line on the right."""
    layers: list[dict[str, Any]] = []
    if charts.has(telemetry, "swapouts_per_min"):
        layers.append({"name": "swap_bars", "data": dict(data), "mark": charts.bar_mark(SWAP_FILL),
                       "encoding": {"x": charts.x_enc(), "x2": charts.x2_enc(), "y2": charts.Y_ZERO, "tooltip": SWAP_TIPS,
                                    "y": charts.y_enc("swapouts_per_min", charts.y_axis(fmt="~s", tick_count=4, tick_min_step=1),
                                                      charts.y_scale(charts.column(telemetry, "swapouts_per_min")))}})
    if charts.has(telemetry, "pressure"):
        layers.append({"name": "swap_pressure", "data": dict(data),
                       "mark": {"type": "line", "color": PRESSURE_COLOR, "strokeWidth": 1.6, "interpolate": "step-after", "clip": True},
                       "encoding": {"x": charts.x_enc(), "tooltip": SWAP_TIPS,
                                    "y": charts.y_enc("pressure", charts.y_axis("right", tick_count=3), {"domain": [0, 100]})}})
    return charts.panel("swap", "Swap-outs per minute (bars) and memory pressure 0-100 (line)" + tag, layers,
                        height=PANEL_HEIGHT, independent_y=True)


def host_panels(window: LiveWindow) -> list[Callable[[dict[str, Any]], dict[str, Any]]]:
    """The host's panels for the Timeline (charts.timeline_chart's `extra_panels`, rows inline):
    free memory, VRAM per GPU (only where a GPU was read; a Mac's GPU memory is the free memory)
    and swap-outs with pressure; none when the sidecar holds no host sample in the range."""
    telemetry = _telemetry_rows(window)
    if not any(charts.has(telemetry, c) for c in ("free_gb", "swapouts_per_min", "pressure")):
        return []
    tag = " · SIMULATED host (demo)" if window.simulated else ""
    inline = {"values": telemetry}
    panels: list[Callable[[dict[str, Any]], dict[str, Any]]] = [lambda _x: memory_panel(telemetry, inline, tag)]
    gpus = _gpu_rows(window) if window.has_gpus else []
    if gpus:
        panels.append(lambda _x: vram_panel(gpus, {"values": gpus}, simulated=window.gpu_simulated))
    panels.append(lambda _x: swap_panel(telemetry, inline, tag))
    return panels


def live_domain(window: LiveWindow) -> tuple[int, int]:
    """The chart's time domain: the window widened to whole minutes (and buckets), epoch ms."""
    return charts.time_domain(window.start, window.end, window.bucket_s)


def live_chart(rollup: pd.DataFrame, window: LiveWindow) -> dict[str, Any]:
    """Latency (p50/p95), failure rate, the llama-server runner's tokens/s and busy slots (only
    when a runner was read in the window), free memory (GB and pages), swap-outs per minute with
    pressure: one shared UTC time axis over the window, markers on every panel, and a trials
    strip at the bottom whose brush zooms every panel. A Vega-Lite spec for st.vega_lite_chart."""
    tag = " · SIMULATED host (demo)" if window.simulated else ""
    domain = live_domain(window)
    span = domain[1] - domain[0]
    trials = charts.inside(charts.trial_rows(rollup, charts.bucket_width_s(rollup["minute"])), domain)
    telemetry = charts.inside(_telemetry_rows(window), domain)
    markers = charts.marker_rows(window.markers, domain)
    runners = charts.inside(charts.runner_rows(window.runners, window.bucket_s), domain) if window.has_runners else []
    problems = [r for r in runners if r["problem"] is not None]

    trial_data, tele_data = {"name": "trials"}, {"name": "telemetry"}
    rows = [
        charts.panel("latency", "Latency (s)", charts.latency_layers(trial_data, trials, points=True), height=PANEL_HEIGHT),
        charts.panel("failure", "Failure rate (timeouts + errors)", charts.failure_layers(trial_data, trials), height=100),
    ]
    if runners:
        rows.append(charts.panel("runner", charts.RUNNER_TITLE,
                                 charts.runner_layers({"name": "runners"}, runners, {"name": "runner_problems"} if problems else None),
                                 height=110, independent_y=True))  # fmt: skip
    rows.append(memory_panel(telemetry, tele_data, tag))
    gpus = charts.inside(_gpu_rows(window), domain) if window.has_gpus else []
    if gpus:  # Linux GPUs; a Mac's GPU memory is the free memory above
        rows.append(vram_panel(gpus, simulated=window.gpu_simulated))
    rows.append(swap_panel(telemetry, tele_data, tag))
    last = len(rows) - 1
    rows = [charts.finish_panel(p, charts.time_axis(span, labels=(n == last)), markers, with_text=(n == 0), span_ms=span)
            for n, p in enumerate(rows)]
    overview = charts.overview_panel(trial_data, trials, charts.time_axis(span, title="time (UTC)"),
                                     "Trials per minute: drag here to zoom every panel, double-click to reset")  # fmt: skip
    datasets: dict[str, Any] = {"trials": trials, "telemetry": telemetry, "runners": runners}
    if gpus:
        datasets["gpus"] = gpus
    if problems:
        datasets["runner_problems"] = problems
    return charts.stack(rows, overview, datasets, domain, markers)
