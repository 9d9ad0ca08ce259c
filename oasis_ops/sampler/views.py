"""The Live page's data and charts, without Streamlit: what the sampler wrote, read back.

`live_header()` is the header (model states with their llama-server runner's slots, host
memory, swap-out rate, freshness of every source, the sampler heartbeat; header.py);
`live_window()` is the telemetry per bucket and the event markers over the chart window
(window.py); `live_chart()` stacks latency, failure rate, the runner's tokens/s and busy slots
(when a llama-server runner was read), free memory and swap-outs with pressure on one shared
time axis, markers on every panel (livechart.py). The runner panel's header line and buckets are
runner_panel.py's. Each read opens the sidecar read-only once and runs all of its named
statements on that one connection (reads.py). `build_live_view()` below is one full refresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from oasis_ops.sampler.header import OLLAMA_STATE_KINDS as OLLAMA_STATE_KINDS
from oasis_ops.sampler.header import RUNNER_MATCH_S as RUNNER_MATCH_S
from oasis_ops.sampler.header import SWAP_RATE_WINDOW_S as SWAP_RATE_WINDOW_S
from oasis_ops.sampler.header import (
    HeaderRows,
    LiveHeader,
    ModelState,
    live_header,
    live_header_at,
    read_header_rows,
)
from oasis_ops.sampler.livechart import AXIS_INSIDE as AXIS_INSIDE
from oasis_ops.sampler.livechart import LEFT_AXIS as LEFT_AXIS
from oasis_ops.sampler.livechart import MEMORY_COLOR as MEMORY_COLOR
from oasis_ops.sampler.livechart import PANEL_HEIGHT as PANEL_HEIGHT
from oasis_ops.sampler.livechart import PRESSURE_COLOR as PRESSURE_COLOR
from oasis_ops.sampler.livechart import RIGHT_AXIS as RIGHT_AXIS
from oasis_ops.sampler.livechart import SLOTS_COLOR as SLOTS_COLOR
from oasis_ops.sampler.livechart import SWAP_COLOR as SWAP_COLOR
from oasis_ops.sampler.livechart import TOKENS_COLOR as TOKENS_COLOR
from oasis_ops.sampler.livechart import live_chart
from oasis_ops.sampler.runner_panel import RUNNER_COLUMNS as RUNNER_COLUMNS
from oasis_ops.sampler.runner_panel import RunnerState, runner_buckets, runner_line, runner_state
from oasis_ops.sampler.window import MAX_BUCKETS as MAX_BUCKETS
from oasis_ops.sampler.window import MAX_MARKERS as MAX_MARKERS
from oasis_ops.sampler.window import TELEMETRY_COLUMNS as TELEMETRY_COLUMNS
from oasis_ops.sampler.window import LiveWindow, bucket_seconds_for, event_label, live_window
from oasis_ops.sidecar import Sidecar


# --- everything a refresh does (the bench measures this) -------------------------------------------
@dataclass
class LiveView:
    header: LiveHeader
    window: LiveWindow
    rollup: pd.DataFrame
    chart: dict[str, Any]  # a Vega-Lite spec
    trials_stale_s: float | None


def window_bounds(now: datetime, minutes: int, newest_trial: datetime | None, live: bool) -> tuple[datetime, datetime]:
    """The chart window: the last `minutes` before now, or before the newest trial of a run
    that is no longer live (so a finished run still shows its last minutes)."""
    end = now if live or newest_trial is None else min(now, newest_trial + timedelta(minutes=1))
    return end - timedelta(minutes=minutes), end


def build_live_view(source: Any, sidecar: Sidecar, minutes: int, now: datetime | None = None, *, spec: bool = True) -> LiveView:
    """One full server-side refresh of the Live page (trial source: a TrialSource or None)."""
    now = now or datetime.now(UTC)
    stale: float | None = None
    newest: datetime | None = None
    live = True
    if source is not None:
        fresh = source.refresh()
        stale, newest, live = fresh.stale_s, fresh.newest_trial_at, fresh.live
    start, end = window_bounds(now, minutes, newest, live)
    rollup = source.rollup(start, end, "1m") if source is not None else empty_rollup(start, end)
    header = live_header(sidecar, now)
    window = live_window(sidecar, start, end)
    chart = live_chart(rollup, window)
    if spec:
        json.dumps(chart)  # what st.vega_lite_chart serializes: part of the server-side cost
    return LiveView(header, window, rollup, chart, stale)


def empty_rollup(start: datetime, end: datetime) -> pd.DataFrame:
    """A rollup with no trials (empty buckets over the window), for a page without a trial DB."""
    minutes = pd.date_range(pd.Timestamp(start).floor("min"), pd.Timestamp(end), freq="1min", inclusive="left")
    zeros = [0] * len(minutes)
    nans = [float("nan")] * len(minutes)
    return pd.DataFrame({"minute": minutes, "trials": zeros, "ok": zeros, "timeouts": zeros, "errors": zeros,
                         "failure_rate": nans, "p50_ms": nans, "p95_ms": nans, "p99_ms": nans, "max_ms": nans})  # fmt: skip


__all__ = [
    "LiveHeader",
    "LiveView",
    "LiveWindow",
    "ModelState",
    "build_live_view",
    "bucket_seconds_for",
    "empty_rollup",
    "event_label",
    "live_chart",
    "HeaderRows",
    "RunnerState",
    "live_header",
    "live_header_at",
    "read_header_rows",
    "live_window",
    "runner_buckets",
    "runner_line",
    "runner_state",
    "window_bounds",
]
