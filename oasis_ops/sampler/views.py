"""The Live page's data and charts, without Streamlit: what the sampler wrote, read back.

`live_header()` is the header (model states, host memory, swap-out rate, freshness of every
source, the sampler heartbeat); `live_window()` is the telemetry per bucket and the event
markers over the chart window; `live_chart()` stacks latency, failure rate, free memory and
swap-outs with pressure on one shared time axis, markers on every panel. Each read opens the
sidecar read-only once and runs all of its named statements on that one connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from oasis_ops import charts, duck
from oasis_ops.actions.episodes import episode_start_from_sidecar
from oasis_ops.sampler.core import HEARTBEAT_STALE_S
from oasis_ops.sampler.hostsource import is_simulated, pressure_level
from oasis_ops.sidecar import SamplerHeartbeat, Sidecar, records
from oasis_ops.sidecar import schema as sidecar_schema
from oasis_ops.sqlfiles import sql
from oasis_ops.status import swapouts_per_min

SWAP_RATE_WINDOW_S = 60.0  # the header's swap-out rate: over the newest minute of samples
MAX_MARKERS = 500
MAX_BUCKETS = 400  # chart points per series: aggregated in SQL, never raw samples to the browser
OLLAMA_STATE_KINDS = ("ollama_unreachable", "ollama_back", "sampler_started")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_seconds_for(window: timedelta) -> int:
    """10 s buckets up to an hour, wider beyond (at most MAX_BUCKETS points per series)."""
    return max(10, int(-(-window.total_seconds() // MAX_BUCKETS)))


@contextmanager
def _reader(sidecar: Sidecar) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """One read-only connection for several statements (None: the sidecar does not exist).

    Goes through the Sidecar's per-process lock and lock-retry (DuckDB refuses one file in two
    modes in one process; the action bar writes audit rows from this process).
    """
    if not sidecar.path.exists():
        yield None
        return
    sidecar_schema.check_duckdb_header(sidecar.path)
    with sidecar._connection(read_only=True) as con:  # noqa: SLF001 - see the report: a public reader is requested
        yield con


def _query(sidecar: Sidecar, con: duckdb.DuckDBPyConnection | None, statement: str, **params: Any) -> pd.DataFrame:
    if con is None:
        return sidecar.query(statement, **params)  # empty frame with the right columns
    try:
        return con.execute(sql(statement), params).df()
    except (duckdb.CatalogException, duckdb.BinderException):
        return sidecar.query(statement, **params)  # raises the sidecar's clear SchemaError
    except duckdb.Error as exc:
        raise duck.translate(exc, str(sidecar.path)) from None


def _rows(sidecar: Sidecar, con: duckdb.DuckDBPyConnection | None, statement: str, **params: Any) -> list[dict[str, Any]]:
    """Like records(_query(...)) without the DataFrame round trip (~3 ms per query saved)."""
    if con is None:
        return records(sidecar.query(statement, **params))
    try:
        cursor = con.execute(sql(statement), params)
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except (duckdb.CatalogException, duckdb.BinderException):
        return records(sidecar.query(statement, **params))  # raises the sidecar's clear SchemaError
    except duckdb.Error as exc:
        raise duck.translate(exc, str(sidecar.path)) from None


def _ts(value: Any) -> datetime | None:
    if value is None or (not isinstance(value, datetime) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _age(ts: datetime | None, now: datetime) -> float | None:
    return None if ts is None else max(0.0, (now - ts).total_seconds())


# --- the header ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelState:
    """The newest sample of one model, as the header shows it."""

    model: str
    state: str  # loaded | stopping | gone
    sampled_at: datetime
    stopping_since: datetime | None
    stopping_for_s: float | None  # now - stopping_since (not the value at sampling time)
    processor: str | None
    runner_pid: int | None
    runner_rss_bytes: int | None
    runner_cpu_percent: float | None
    age_s: float


@dataclass
class LiveHeader:
    now: datetime
    sidecar_path: str
    sidecar_exists: bool
    models: list[ModelState] = field(default_factory=list)  # newest sample per model seen in the window
    host: dict[str, Any] | None = None  # newest host_samples row
    host_age_s: float | None = None
    ps_age_s: float | None = None  # newest model sample; None when no model was seen
    swapouts_per_min: float | None = None
    pressure_level: str | None = None
    simulated: bool = False
    heartbeat: SamplerHeartbeat | None = None
    ollama_reachable: bool | None = None  # None: unknown (no sampler ever ran)
    ollama_detail: str | None = None

    @property
    def sampler_running(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.running

    @property
    def active_models(self) -> list[ModelState]:
        return [m for m in self.models if m.state != "gone"]


def _heartbeat(rows: list[dict[str, Any]], now: datetime) -> SamplerHeartbeat | None:
    """Like Sidecar.sampler_heartbeat(): running while the last tick is recent; "recent" allows
    for the sampler's batched writes (the row is written every FLUSH_INTERVAL_S)."""
    if not rows:
        return None
    row = rows[0]
    last_tick = _ts(row.get("last_tick_at"))
    age = _age(last_tick, now)
    interval = row.get("interval_s")
    limit = max(HEARTBEAT_STALE_S, 5 * (interval or 1.0))
    running = row.get("stopped_at") is None and age is not None and age <= limit
    return SamplerHeartbeat(
        sampler_id=row["sampler_id"],
        pid=row.get("pid"),
        host=row.get("host"),
        started_at=_ts(row.get("started_at")),
        last_tick_at=last_tick,
        ticks=row.get("ticks"),
        errors=row.get("errors"),
        last_error=row.get("last_error"),
        interval_s=interval,
        stopped_at=_ts(row.get("stopped_at")),
        age_s=age,
        running=running,
    )


@dataclass(frozen=True)
class HeaderRows:
    """The header's raw rows (cacheable); `live_header_at()` turns them into ages at a given now."""

    sidecar_path: str
    sidecar_exists: bool
    host_rows: list[dict[str, Any]]
    model_rows: list[dict[str, Any]]
    beat_rows: list[dict[str, Any]]
    ollama_rows: list[dict[str, Any]]
    rate_row: dict[str, Any] | None
    # model -> start of its current Stopping episode (see oasis_ops.actions.episodes): a harness
    # that re-sends keep_alive 0 resets Ollama's expires_at, not how long the runner is stuck.
    episode_starts: dict[str, datetime] = field(default_factory=dict)


def read_header_rows(sidecar: Sidecar, models_since: datetime) -> HeaderRows:
    """Everything the header shows, from one read-only open of the sidecar."""
    with _reader(sidecar) as con:
        # The newest host sample: looked for in the last hour first (zone maps skip the rest of a
        # big table), in the whole table only when the sampler has been down longer.
        host_rows = _rows(sidecar, con, "sampler_q_latest_host_since", since=models_since)
        if not host_rows:
            host_rows = _rows(sidecar, con, "sidecar_q_latest_host_sample")
        model_rows = _rows(sidecar, con, "sidecar_q_latest_model_states", since=models_since)
        beat_rows = _rows(sidecar, con, "sidecar_q_sampler_heartbeat")
        ollama_rows = _rows(sidecar, con, "sampler_q_last_event_of", kinds=list(OLLAMA_STATE_KINDS))
        rate_row: dict[str, Any] | None = None
        if host_rows:
            newest = _ts(host_rows[0]["ts"])
            assert newest is not None
            rate_rows = _rows(sidecar, con, "sampler_q_swap_counter_span", since=newest - timedelta(seconds=SWAP_RATE_WINDOW_S),
                              source=host_rows[0].get("source"))  # fmt: skip
            rate_row = rate_rows[0] if rate_rows else None
    episode_starts: dict[str, datetime] = {}
    for row in model_rows:  # after the read above: episodes open the sidecar themselves
        sampled = _ts(row.get("ts"))
        if row.get("state") != "stopping" or sampled is None:
            continue
        pid = row.get("runner_pid")
        runner_pid = int(pid) if isinstance(pid, int | float) and pid == pid else None
        start = episode_start_from_sidecar(sidecar, str(row["model"]), sampled, runner_pid)
        if start is not None:
            episode_starts[str(row["model"])] = start
    return HeaderRows(str(sidecar.path), sidecar.path.exists(), host_rows, model_rows, beat_rows, ollama_rows, rate_row,
                      episode_starts)  # fmt: skip


def live_header(sidecar: Sidecar, now: datetime | None = None, *, models_since: datetime | None = None) -> LiveHeader:
    """The header at `now` (default: the current time)."""
    now = now or datetime.now(UTC)
    return live_header_at(read_header_rows(sidecar, models_since or now - timedelta(hours=1)), now)


def live_header_at(rows: HeaderRows, now: datetime) -> LiveHeader:
    """Ages and states of `rows` as of `now`."""
    header = LiveHeader(now=now, sidecar_path=rows.sidecar_path, sidecar_exists=rows.sidecar_exists)
    host_rows, model_rows, beat_rows, ollama_rows, rate_row = (
        rows.host_rows, rows.model_rows, rows.beat_rows, rows.ollama_rows, rows.rate_row
    )
    if host_rows:
        host = host_rows[0]
        header.host = host
        header.host_age_s = _age(_ts(host["ts"]), now)
        header.simulated = is_simulated(host.get("source"))
        header.pressure_level = pressure_level(host.get("pressure"), host.get("source"))
    if rate_row and rate_row.get("samples", 0) >= 2:
        first_ts, last_ts = _ts(rate_row["first_ts"]), _ts(rate_row["last_ts"])
        if first_ts is not None and last_ts is not None:
            header.swapouts_per_min = swapouts_per_min(first_ts, rate_row["first_swapouts"], last_ts, rate_row["last_swapouts"])
    for row in model_rows:
        sampled = _ts(row["ts"])
        assert sampled is not None
        since = _ts(row.get("stopping_since"))
        episode = rows.episode_starts.get(row["model"])
        if row["state"] == "stopping" and episode is not None and (since is None or episode < since):
            since = episode
        header.models.append(
            ModelState(
                model=row["model"],
                state=row["state"],
                sampled_at=sampled,
                stopping_since=since,
                stopping_for_s=_age(since, now) if row["state"] == "stopping" else None,
                processor=row.get("processor"),
                runner_pid=row.get("runner_pid"),
                runner_rss_bytes=row.get("runner_rss_bytes"),
                runner_cpu_percent=row.get("runner_cpu_percent"),
                age_s=_age(sampled, now) or 0.0,
            )
        )
    if header.models:
        header.ps_age_s = min(m.age_s for m in header.models)
    header.heartbeat = _heartbeat(beat_rows, now)
    if ollama_rows:
        kind = ollama_rows[0]["kind"]
        header.ollama_reachable = kind != "ollama_unreachable"
        detail = _json(ollama_rows[0].get("detail"))
        header.ollama_detail = detail.get("error") if kind == "ollama_unreachable" else detail.get("version")
    # A running sampler polls /api/ps every tick: with Ollama up and no model, its last tick is the
    # last /api/ps sample.
    if header.ps_age_s is None and header.sampler_running and header.ollama_reachable and header.heartbeat:
        header.ps_age_s = header.heartbeat.age_s
    return header


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        data = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- the chart window ------------------------------------------------------------------------------
TELEMETRY_COLUMNS = ["minute", "mem_free_bytes", "mem_available_bytes", "pages_free", "page_size",
                     "swapouts_per_min", "pressure", "simulated"]  # fmt: skip


@dataclass
class LiveWindow:
    start: datetime
    end: datetime
    bucket_s: int
    telemetry: pd.DataFrame  # TELEMETRY_COLUMNS, one row per bucket over [start, end), gaps NaN
    markers: pd.DataFrame  # ts, kind, label (events and actions)

    @property
    def simulated(self) -> bool:
        return bool(self.telemetry["simulated"].fillna(False).astype(bool).any()) if not self.telemetry.empty else False


def event_label(kind: str, model: str | None, detail: dict[str, Any]) -> str:
    """Short marker text: 'gemma4:e4b stopping', 'runner 123→456', 'pressure warn'."""
    if kind == "runner_pid_changed":
        return f"{model or ''} runner {detail.get('old_pid')}→{detail.get('new_pid')}".strip()
    if kind == "pressure":
        return f"pressure {detail.get('to')}"
    if kind in ("loaded", "stopping", "gone"):
        return f"{model} {kind}"
    return kind.replace("_", " ")


def live_window(sidecar: Sidecar, start: datetime, end: datetime, bucket_s: int | None = None) -> LiveWindow:
    """Telemetry per bucket and markers over [start, end), from one read-only open."""
    bucket_s = bucket_s or bucket_seconds_for(end - start)
    width_us = bucket_s * 1_000_000
    with _reader(sidecar) as con:
        series = _query(sidecar, con, "sampler_q_telemetry_buckets", since=start, until=end, width_us=width_us)
        events = _rows(sidecar, con, "sidecar_q_events_since", since=start, until=end, max_rows=MAX_MARKERS)
        actions = _rows(sidecar, con, "sidecar_q_actions_since", since=start, until=end, max_rows=MAX_MARKERS)
    start_us = int((start - _EPOCH).total_seconds() * 1e6) // width_us * width_us
    end_us = int((end - _EPOCH).total_seconds() * 1e6)
    grid = pd.DataFrame({"bucket_us": range(start_us, end_us, width_us)})
    frame = grid.merge(series, on="bucket_us", how="left")
    frame["minute"] = pd.to_datetime(frame["bucket_us"], unit="us", utc=True)
    telemetry = frame.reindex(columns=TELEMETRY_COLUMNS)
    for column in TELEMETRY_COLUMNS[1:-1]:
        telemetry[column] = telemetry[column].astype("float64")

    marks: list[dict[str, Any]] = []
    for row in events:
        if row["kind"] in ("sampler_started", "sampler_stopped"):
            kind = "sampler"
        else:
            kind = row["kind"]
        marks.append({"ts": row["ts"], "kind": kind, "label": event_label(row["kind"], row.get("model"), _json(row.get("detail")))})
    for row in actions:
        label = f"{row['action']} {row.get('target') or ''}".strip() + (f" ({row['outcome']})" if row.get("outcome") else "")
        marks.append({"ts": row["ts"], "kind": str(row["action"]), "label": label})
    markers = pd.DataFrame(marks, columns=["ts", "kind", "label"])
    return LiveWindow(start, end, bucket_s, telemetry, markers)


# --- the chart: a Vega-Lite spec built as plain data -------------------------------------------------
# Built as a dict rather than through Altair: with four layered panels, markers on each and a
# brush, Altair's object copies cost ~0.7 s per build here (bench/bench_live.py), this ~5 ms.
# Colours, the time field, the marker palette and the panel look are charts.py's.
MEMORY_COLOR = "#2ca02c"
SWAP_COLOR = "#8c564b"
PRESSURE_COLOR = "#e377c2"
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
    """Latency (p50/p95), failure rate, free memory (GB and pages), swap-outs per minute with
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
                     "bounds": [{charts.TIME_FIELD: domain[0]}, {charts.TIME_FIELD: domain[1]}]},
        "vconcat": [latency, failure, memory, swap, overview],
        "spacing": 16,
        "resolve": {"scale": {"x": "independent", "color": "independent"}},
        "config": {"axis": {"labelFontSize": 11, "titleFontSize": 11, "titleFontWeight": "normal", "titleColor": "#555555"},
                   "view": {"strokeWidth": 0}},
    }  # fmt: skip


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
    "live_header",
    "live_header_at",
    "read_header_rows",
    "live_window",
    "window_bounds",
]
