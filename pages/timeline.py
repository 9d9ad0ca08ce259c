"""Timeline: the post-mortem view of a run, per bucket (p50/p95 latency, failure rate, counts)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from oasis_ops import charts
from oasis_ops.actions import actions_markers
from oasis_ops.errors import OasisOpsError, TooManyBuckets, UsageError
from oasis_ops.sampler import views
from oasis_ops.sampler.livechart import host_panels
from oasis_ops.sampler.window import LiveWindow, live_window
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from oasis_ops.trials import auto_bucket, parse_time
from oasis_ops.trials.records import records_csv
from oasis_ops.trials.rollup import machine_records
from oasis_ops.trials.span import range_parts, range_text
from oasis_ops.trials.timeparse import bucket_seconds
from pages import _common as ui
from pages._report import report_button

BUCKETS = ["auto", "1m", "5m", "15m", "1h"]
RANGE_MODES = ["Run", "Last hours", "Custom"]
ALL_MODELS = "All models"
# A live run's range extends to now (so a stall shows as empty buckets) if its newest trial is this recent.
LIVE_TAIL = timedelta(hours=1)
# A finished run's range extends over state changes and actions up to this long after its last
# trial: an eviction that deadlocked, and the silence after it, belong to the run's story.
RUN_TAIL = timedelta(minutes=30)


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime
    run_id: str | None
    label: str
    is_run: bool = False
    # The run's span (TrialSource.run_spans via runs(): first start, last end), when the range is a
    # run: what the summary says, whatever extra time the chart shows around it.
    span: tuple[datetime, datetime] | None = None


def _ts(value: Any) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _run_label(row: pd.Series) -> str:
    """The run picker's line: the run's span (start, end, duration) by the one display rule."""
    run = row["run_id"] if row["run_id"] is not None and not pd.isna(row["run_id"]) else "(no run id)"
    start, end, duration = range_parts(_ts(row["first_at"]), _ts(row["ended_at"]))
    return f"{run} · {start} → {end} UTC · {duration} · {int(row['trials']):,} trials"


def choose_range(handle: ui.SourceHandle, version: str, live: bool, newest: datetime | None) -> Range | None:
    """The range controls; default: the latest run. None when the database has no trials yet."""
    runs = ui.cached_runs(handle, handle.key, version)
    if runs.empty:
        return None
    mode_col, pick_col = st.columns([4, 9], vertical_alignment="bottom")
    with mode_col:
        mode = st.segmented_control("Range", RANGE_MODES, default="Run", key="tl_mode") or "Run"
    now = datetime.now(UTC)
    latest_end = max(now, newest) if (live and newest) else (newest or now)
    with pick_col:
        if mode == "Run":
            choice = st.selectbox(
                "Run",
                range(len(runs)),
                format_func=lambda i: _run_label(runs.iloc[i]),
                # one widget per database: with the same key, switching databases kept showing
                # the other database's run label (the options, indices, looked unchanged)
                key=f"tl_run:{handle.path}",
                help="Runs newest first.",
            )
            row = runs.iloc[choice or 0]
            run_id = None if row["run_id"] is None or pd.isna(row["run_id"]) else str(row["run_id"])
            start, end = _ts(row["first_at"]), _ts(row["last_at"])
            span = (start, _ts(row["ended_at"]))
            if live and choice == 0 and now - end < LIVE_TAIL:
                end = now  # a live run: show the minutes with no trials up to now (a stall)
            return Range(start, end + timedelta(microseconds=1), run_id, f"run `{run_id or '(all)'}`", is_run=True, span=span)
        if mode == "Last hours":
            hours = st.number_input("Hours", min_value=0.25, max_value=24.0 * 30, value=6.0, step=1.0, key="tl_hours")
            end = latest_end
            anchor = "now" if live else "the newest trial"
            return Range(end - timedelta(hours=float(hours)), end + timedelta(microseconds=1), None, f"last {hours:g} h before {anchor}")
        first_row = runs.iloc[0]
        left, right = st.columns(2)
        with left:
            start_text = st.text_input("From (UTC)", value=_ts(first_row["first_at"]).strftime("%Y-%m-%dT%H:%M:%SZ"), key="tl_from",
                                       help="ISO 8601 (naive = UTC), or a duration ago such as 6h.")  # fmt: skip
        with right:
            end_text = st.text_input("To (UTC)", value=_ts(first_row["last_at"]).strftime("%Y-%m-%dT%H:%M:%SZ"), key="tl_to",
                                     help="ISO 8601 (naive = UTC), `now`, or a duration ago.")  # fmt: skip
        start, end = parse_time(start_text), parse_time(end_text)
        if end <= start:
            raise UsageError(f"the range ends ({end:%Y-%m-%d %H:%M:%S}) before it starts ({start:%Y-%m-%d %H:%M:%S})")
        return Range(start, end, None, "custom range")


def show_metrics(summary: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("Trials", ui.fmt_count(summary.get("trials")), border=True)
    failures = summary.get("failures")
    cols[1].metric(
        "Failures",
        ui.fmt_count(failures),
        border=True,
        help=f"{ui.fmt_count(summary.get('timeouts'))} timeouts, {ui.fmt_count(summary.get('errors'))} errors",
    )
    cols[2].metric("Failure rate", ui.fmt_rate(summary.get("failure_rate")), border=True, help="(timeouts + errors) / trials")
    cols[3].metric("p50 latency", ui.fmt_ms(summary.get("p50_ms")), border=True, help="Median over trials with a latency")
    cols[4].metric("p95 latency", ui.fmt_ms(summary.get("p95_ms")), border=True, help="95th percentile, linear interpolation")


def failing_buckets(rollup: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Buckets whose failure rate reaches `threshold`, for the "where did it fail" table."""
    bad = rollup[rollup["failure_rate"].fillna(0) >= threshold]
    return pd.DataFrame(
        {
            "bucket (UTC)": pd.to_datetime(bad["minute"], utc=True).dt.strftime("%Y-%m-%d %H:%M"),
            "trials": bad["trials"].map(ui.fmt_count),
            "timeouts": bad["timeouts"].map(ui.fmt_count),
            "errors": bad["errors"].map(ui.fmt_count),
            "failure rate": bad["failure_rate"].map(ui.fmt_rate),
            "p95": bad["p95_ms"].map(ui.fmt_ms),
        }
    )


def failure_windows(rollup: pd.DataFrame, threshold: float) -> list[str]:
    """Consecutive failing buckets merged into windows, as one readable line each."""
    if rollup.empty:
        return []
    minutes = pd.to_datetime(rollup["minute"], utc=True)
    width = minutes.diff().dropna().min() if len(minutes) > 1 else pd.Timedelta(minutes=1)
    failing = (rollup["failure_rate"].fillna(0) >= threshold).to_numpy()
    lines: list[str] = []
    start = None
    for i, bad in enumerate([*failing, False]):
        if bad and start is None:
            start = i
        elif not bad and start is not None:
            part = rollup.iloc[start:i]
            trials = int(part["trials"].sum())
            failed = int(part["timeouts"].sum() + part["errors"].sum())
            begin, end = minutes.iloc[start], minutes.iloc[i - 1] + width
            lines.append(
                f"**{begin:%H:%M}–{end:%H:%M} UTC** ({ui.fmt_age((end - begin).total_seconds())}): "
                f"{failed:,} of {trials:,} trials failed ({ui.fmt_rate(failed / trials if trials else None)}), "
                f"{int(part['timeouts'].sum()):,} timeouts"
            )
            start = None
    return lines


def bucket_table(rollup: pd.DataFrame) -> None:
    view = pd.DataFrame(
        {
            "bucket": pd.to_datetime(rollup["minute"], utc=True),
            "trials": rollup["trials"],
            "ok": rollup["ok"],
            "timeouts": rollup["timeouts"],
            "errors": rollup["errors"],
            "failure_rate": rollup["failure_rate"] * 100,
            "p50_s": rollup["p50_ms"] / 1000,
            "p95_s": rollup["p95_ms"] / 1000,
            "p99_s": rollup["p99_ms"] / 1000,
            "max_s": rollup["max_ms"] / 1000,
        }
    )

    def seconds(title: str) -> Any:
        return st.column_config.NumberColumn(title, format="%.2f s", width="small")

    st.dataframe(
        view,
        hide_index=True,
        height=360,
        column_config={
            "bucket": st.column_config.DatetimeColumn("bucket (UTC)", format="YYYY-MM-DD HH:mm"),
            "trials": st.column_config.NumberColumn("trials", format="%d"),
            "ok": st.column_config.NumberColumn("ok", format="%d"),
            "timeouts": st.column_config.NumberColumn("timeouts", format="%d"),
            "errors": st.column_config.NumberColumn("errors", format="%d"),
            "failure_rate": st.column_config.ProgressColumn("failure rate", format="%.1f%%", min_value=0, max_value=100, color="red"),
            "p50_s": seconds("p50"),
            "p95_s": seconds("p95"),
            "p99_s": seconds("p99"),
            "max_s": seconds("max"),
        },
    )


def rollup_csv(rollup: pd.DataFrame) -> bytes:
    """Exactly `oasis-ops timeline --format csv`: the JSON keys, `minute` in ISO 8601 UTC,
    latencies to 0.01 ms."""
    return records_csv(machine_records(rollup)).encode("utf-8")


def summary_caption(rng: Range, model: str | None, bucket: str) -> str:
    """The line under "Summary": a run by its span (the same text as the run picker, the timeline
    CLI, incidents and the reports), or the range; and how far the chart reaches beyond the run."""
    if rng.span is not None:
        first, last = rng.span
        what = f"{rng.label}: {range_text(first, last)}"
        if rng.end > last + timedelta(seconds=1):
            what += " · the chart runs on past the run's end, to show what happened after its last trial"
    else:
        what = f"{rng.label}: {range_text(rng.start, rng.end)}"
    return f"{what} · {model or 'all models'} · {bucket} buckets (trials by start time)"


# Event kinds worth a marker on a post-mortem chart (samples-level noise stays off).
MARKER_EVENT_KINDS = {"stopping", "gone", "loaded", "runner_pid_changed", "ollama_unreachable", "ollama_back", "pressure",
                      "runner_no_progress", "runner_progress", "runner_not_answering", "runner_answering"}
MAX_MARKERS = 200


@st.cache_data(ttl=15, max_entries=32, show_spinner=False)
def timeline_markers(sidecar_path: str, start: datetime, end: datetime) -> pd.DataFrame:
    """State changes and audited actions from the telemetry sidecar, as chart markers."""
    columns = ["ts", "kind", "label"]
    sidecar = Sidecar(sidecar_path)
    try:
        actions = actions_markers(sidecar, start, end, max_rows=MAX_MARKERS)
        events = sidecar.events_since(start, end, max_rows=MAX_MARKERS * 5)
    except OasisOpsError:
        return pd.DataFrame(columns=columns)  # no or unreadable sidecar: the chart goes without
    frames = [actions] if not actions.empty else []
    if not events.empty:
        kinds = events["kind"].astype(str)
        keep = events[kinds.apply(lambda k: any(k.startswith(p) for p in MARKER_EVENT_KINDS))]
        if not keep.empty:
            labels = [f"{k} {m}" if isinstance(m, str) and m else str(k) for k, m in zip(keep["kind"], keep["model"], strict=True)]
            frames.append(pd.DataFrame({"ts": pd.to_datetime(keep["ts"], utc=True), "kind": keep["kind"].astype(str), "label": labels}))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).sort_values("ts").tail(MAX_MARKERS)


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def warning_markers(db: str, sidecar_path: str, key: str, start: datetime, end: datetime, run_id: str | None,
                    _settings: Settings) -> pd.DataFrame:  # fmt: skip
    """The early warnings raised, or that would have been raised, over the range (the causal scan
    of `oasis-ops warnings`), as chart markers next to state changes and actions."""
    from oasis_ops.earlywarning.engine import scan_warnings
    from oasis_ops.earlywarning.inputs import load_inputs
    from oasis_ops.trials import TrialSource

    try:
        with TrialSource(Path(db), _settings) as source:
            sidecar = Sidecar(sidecar_path, _settings) if Path(sidecar_path).exists() else None
            warnings = scan_warnings(load_inputs(sidecar, source, start, end, run_id=run_id), start, end, _settings)[0]
    except OasisOpsError:
        warnings = []
    rows = [{"ts": pd.Timestamp(w.at), "kind": "warning", "label": f"warning: {w.kind} ({w.severity})"} for w in warnings]
    return pd.DataFrame(rows, columns=["ts", "kind", "label"])


@st.cache_data(ttl=15, max_entries=32, show_spinner=False)
def timeline_runners(sidecar_path: str, start: datetime, end: datetime, bucket_s: int) -> pd.DataFrame:
    """llama-server runner signals per bucket (tokens/s, busy slots, stalls) from the sidecar;
    empty when no runner was read (Ollama < 0.30, no sidecar): the chart goes without the panel."""
    try:
        return views.runner_buckets(Sidecar(sidecar_path), start, end, bucket_s)
    except OasisOpsError:
        return pd.DataFrame(columns=views.RUNNER_COLUMNS)


@st.cache_data(ttl=15, max_entries=32, show_spinner=False)
def timeline_host(sidecar_path: str, start: datetime, end: datetime, bucket_s: int) -> LiveWindow | None:
    """Free memory, swap-outs, pressure and VRAM per GPU per bucket from the sidecar, as the Live
    page reads them; None without a readable sidecar (the chart goes without those panels)."""
    if not Path(sidecar_path).exists():
        return None
    try:
        return live_window(Sidecar(sidecar_path), start, end, bucket_s)
    except OasisOpsError:
        return None


def render(settings: Settings) -> None:
    st.title("Timeline")
    st.caption("Per-bucket latency and failures over a run: the post-mortem view.")

    path = ui.current_db(settings)
    if not path:
        ui.no_database_message()
        return
    handle = ui.source_handle(path, settings)
    fresh = ui.refresh(handle)
    version = ui.data_version(fresh)
    head_left, head_right = st.columns([6, 1], vertical_alignment="center")
    head_left.markdown(ui.freshness_line(fresh))
    if head_right.button("Refresh", icon=":material/refresh:", width="stretch"):
        st.cache_data.clear()
        st.rerun()

    newest = _ts(fresh.newest_trial_at) if fresh.newest_trial_at is not None else None
    with st.container(border=True):
        rng = choose_range(handle, version, fresh.live, newest)
        if rng is None:
            st.info("This database has no trials yet. They appear here as the runner writes them.", icon=":material/hourglass_empty:")
            return
        models = ui.cached_models(handle, handle.key, version)
        model_col, bucket_col, scale_col = st.columns([3, 1, 1], vertical_alignment="bottom")
        model_pick = model_col.selectbox("Model", [ALL_MODELS, *models], key="tl_model")
        model = None if model_pick == ALL_MODELS else model_pick
        bucket_pick = bucket_col.selectbox("Bucket", BUCKETS, key="tl_bucket", help="auto: 1 minute up to a day, wider beyond")
        log_latency = scale_col.toggle("Log latency axis", key="tl_log", help="Keeps normal latencies readable next to 60 s timeouts")
    sidecar_path = str(sidecar_path_for(path, settings))
    if rng.is_run and not fresh.live:
        after = timeline_markers(sidecar_path, rng.end, rng.end + RUN_TAIL)
        if not after.empty:
            rng = replace(rng, end=_ts(after["ts"].max()) + timedelta(minutes=1))
    bucket = auto_bucket(rng.start, rng.end) if bucket_pick == "auto" else str(bucket_pick)

    summary = ui.cached_summary(handle, handle.key, version, rng.start, rng.end, rng.run_id, model)
    try:
        rollup = ui.cached_rollup(handle, handle.key, version, rng.start, rng.end, bucket, rng.run_id, model)
    except TooManyBuckets as exc:  # an explicit bucket too narrow for the range: said, nothing drawn
        st.error(str(exc), icon=":material/block:")
        return

    if rng.is_run and model is not None:  # the span of this model's trials in the run, as `timeline --model` says it
        model_span = ui.call(handle, lambda s: s.run_span(rng.run_id, model))
        rng = replace(rng, span=(model_span.start, model_span.end) if model_span is not None else rng.span)
    st.subheader("Summary")
    st.caption(summary_caption(rng, model, bucket))
    show_metrics(summary)

    st.subheader("Latency and failures")
    if rollup.empty or int(rollup["trials"].sum()) == 0:
        st.info("No trials in this range.", icon=":material/search_off:")
        return
    st.caption("Drag on the bottom strip to zoom every panel; double-click it to reset. Hover for the numbers of a bucket.")
    markers = timeline_markers(sidecar_path, rng.start, rng.end)
    warned = warning_markers(str(path), sidecar_path, ui.settings_key(settings), rng.start, rng.end, rng.run_id, settings)
    if not warned.empty:
        markers = pd.concat([markers, warned], ignore_index=True).sort_values("ts") if not markers.empty else warned
    runners = timeline_runners(sidecar_path, rng.start, rng.end, bucket_seconds(bucket))
    width_s = bucket_seconds(bucket)
    extra = [lambda x: charts.runner_panel(runners, x, bucket_s=width_s)] if not runners.empty else []
    host = timeline_host(sidecar_path, rng.start, rng.end, width_s)
    extra += host_panels(host) if host is not None else []
    chart = charts.timeline_chart(rollup, markers=markers, log_latency=log_latency, extra_panels=extra,
                                  domain=(rng.start, rng.end), bucket_s=width_s)  # fmt: skip
    st.altair_chart(chart, width="stretch")
    if not markers.empty:
        st.caption(f"Dashed lines: {len(markers)} state changes, actions and early warnings (orange: when the console warned, "
                   "or would have) from the telemetry sidecar, labelled above the top panel where the labels fit; hover a line "
                   "or its triangle for each one.")  # fmt: skip

    threshold = float(settings.incident_min_failure_rate)
    failing = failing_buckets(rollup, threshold)
    if settings.prometheus_url:  # the other hosts over this range, through the lab's Prometheus
        from pages._hosts import hosts_section  # type: ignore[import-not-found]

        hosts_section(settings, start=rng.start, end=rng.end)

    st.subheader("Failing buckets")
    if failing.empty:
        st.success(f"No bucket reached a {ui.fmt_rate(threshold)} failure rate.", icon=":material/check_circle:")
    else:
        windows = failure_windows(rollup, threshold)
        st.markdown("\n".join(f"- :red[:material/error:] {line}" for line in windows[:10]))
        st.caption(f"Buckets with a failure rate of {ui.fmt_rate(threshold)} or more ({len(failing)} of {len(rollup)}).")
        st.table(failing.head(60).set_index("bucket (UTC)"))

    st.subheader("All buckets")
    bucket_table(rollup)
    stem = (rng.run_id or "range").replace("/", "_")
    st.download_button(
        "Download CSV",
        data=rollup_csv(rollup),
        file_name=f"oasis-ops-timeline-{stem}-{bucket}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
    )
    # A run's report is the run's (as `oasis-ops report --run-id`), not the chart's wider range.
    report_button(path, settings, start=None if rng.is_run else rng.start, end=None if rng.is_run else rng.end,
                  run_id=rng.run_id, model=model, key="tl_report")  # fmt: skip


settings = ui.page_setup("pages/timeline.py")
with ui.page_errors():
    render(settings)
