"""Diagnostics: preflight checks, incident windows with their causes and evidence, and the
encoder-versus-generation timings from server.log."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from oasis_ops import charts
from oasis_ops.control import ControlChannel, control_dir_for
from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.findings import WindowContext, timing_comparison
from oasis_ops.diagnosis.incidents import Analysis, analyze
from oasis_ops.diagnosis.preflight import Sources, run_preflight
from oasis_ops.diagnosis.views import timing_frame
from oasis_ops.errors import OasisOpsError
from oasis_ops.settings import Settings
from pages import _common as ui
from pages._report import report_button

STATUS_ICON = {"ok": ":green[:material/check_circle:]", "warn": ":orange[:material/warning:]", "block": ":red[:material/block:]"}
PREFLIGHT_TTL_S = 15


@st.cache_data(ttl=PREFLIGHT_TTL_S, max_entries=8, show_spinner=False)
def cached_preflight(model: str, min_free_gb: float, db: str, key: str, _settings: Settings) -> dict[str, Any]:
    state = None
    if db:
        try:
            directory = control_dir_for(db, _settings)
            state = ControlChannel(directory).runner_state() if directory.is_dir() else None
        except OasisOpsError:
            state = None
    return run_preflight(_settings, model=model or None, min_free_gb=min_free_gb, sources=Sources(runner_state=state)).as_dict()


@st.cache_data(ttl=ui.QUERY_TTL_S, max_entries=8, show_spinner=False)
def cached_analysis(_handle: ui.SourceHandle, key: str, version: str, _settings: Settings) -> Analysis:
    return analyze(_handle.path, _settings, source=_handle.source)


def show_preflight(settings: Settings, db: str) -> None:
    st.subheader("Preflight")
    st.caption("Is this machine fit to start a long run? The same checks as `oasis-ops preflight`.")
    left, mid, right = st.columns([3, 2, 1], vertical_alignment="bottom")
    model = left.text_input("Model", value="", placeholder="e.g. gemma4:e4b", key="dx_model")
    min_free = mid.number_input("Minimum free memory (GB)", min_value=0.0, max_value=1024.0, value=8.0, step=1.0, key="dx_min_free")
    if right.button("Re-check", icon=":material/refresh:", key="dx_recheck"):
        cached_preflight.clear()
    result = cached_preflight(model.strip(), float(min_free), db, ui.settings_key(settings), settings)
    verdict = result["verdict"]
    if verdict == "blocked":
        st.error("**Blocked**: do not start a long run until the blocking checks pass.", icon=":material/block:")
    elif verdict == "warnings":
        st.warning("**Go with warnings**: read them before a long run.", icon=":material/warning:")
    else:
        st.success("**Go**: every check passed.", icon=":material/check_circle:")
    st.markdown("\n".join(f"- {STATUS_ICON[c['status']]} **{c['id']}** — {c['message']}" for c in result["checks"]))


def show_incidents(analysis: Analysis) -> None:
    st.subheader("Incident windows")
    scan = analysis.scan
    base = scan.baseline
    st.caption(
        f"Run {scan.run_id or '(all)'} · {t.day_hm(scan.start)}–{t.hm(scan.end)} UTC · baseline: per-minute p95 median "
        f"{t.ms(base.p95_median_ms)}, failure rate {t.rate(base.failure_rate)}"
    )
    if not analysis.has_sidecar:
        st.info(f"No telemetry sidecar at `{analysis.sidecar}`: windows are shown, causes cannot be checked. "
                "Run `oasis-ops sample` (or the dashboard) during runs.", icon=":material/info:")  # fmt: skip
    if not analysis.incidents:
        st.success("No incident: every minute stayed within the run's own baseline.", icon=":material/check_circle:")
        return
    for n, incident in enumerate(analysis.incidents, 1):
        w = incident.window
        with st.container(border=True):
            st.markdown(f"#### Window {n}: {t.day_hm(w.start)}–{t.hm(w.end)} UTC ({t.duration(w.duration)})")
            cols = st.columns(4)
            cols[0].metric("Failed", f"{t.count(w.failures)} / {t.count(w.trials)}", border=True)
            cols[1].metric("Failure rate", t.rate(w.failure_rate), delta=f"before {t.rate(w.failure_rate_before)}", delta_color="off", border=True)
            cols[2].metric("p50", t.ms(w.p50_ms_during), delta=f"before {t.ms(w.p50_ms_before)}", delta_color="off", border=True)
            p95 = ("≥ " if w.p95_censored else "") + t.ms(w.p95_ms_during)
            cols[3].metric("p95", p95, delta=f"before {t.ms(w.p95_ms_before)}", delta_color="off", border=True)
            if not incident.findings:
                st.caption("No cause found in the telemetry.")
            for f in incident.findings:
                mark = ":red[**CONFIRMED**]" if f.status == "confirmed" else ":green[**REFUTED**]"
                st.markdown(f"{mark} **{f.title}** · `{f.id}` · confidence {f.confidence:.2f}")
                st.markdown("\n".join(f"- {e}" for e in f.evidence))
                st.caption(f"Action: {f.action}")


def show_timings(analysis: Analysis, settings: Settings) -> None:
    st.subheader("Encoder versus generation (server.log)")
    timings = analysis.telemetry.timings
    if timings.empty:
        st.info("No llama-server timing lines ingested for this run: `oasis-ops ingest-logs --db ... --server-log server.log`.",
                icon=":material/info:")  # fmt: skip
        return
    st.caption("Each dot is one request: a warm image encoder stays flat while a stalled generation climbs.")
    windows = [(i.window.start, i.window.end) for i in analysis.incidents]
    st.altair_chart(charts.timing_chart(timing_frame(timings), windows), width="stretch")
    rows = []
    for incident in analysis.incidents:
        before, during = timing_comparison(WindowContext(incident.window, analysis.telemetry, settings, model=incident.model))
        rows.append({
            "window (UTC)": f"{t.hm(incident.window.start)}–{t.hm(incident.window.end)}",
            "encode before (ms)": before["encode_ms"], "encode during (ms)": during["encode_ms"],
            "eval/token before (ms)": before["eval_ms_per_token"], "eval/token during (ms)": during["eval_ms_per_token"],
        })  # fmt: skip
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def render(settings: Settings) -> None:
    st.title("Diagnostics")
    st.caption("Preflight checks, incident windows with their causes and evidence, and where the time went.")
    path = ui.current_db(settings)
    show_preflight(settings, path)
    if not path:
        ui.no_database_message()
        return
    handle = ui.source_handle(path, settings)
    fresh = ui.refresh(handle)
    analysis = cached_analysis(handle, handle.key, ui.data_version(fresh), settings)
    show_incidents(analysis)
    show_timings(analysis, settings)
    scan = analysis.scan
    report_button(path, settings, start=scan.start, end=scan.end, run_id=scan.run_id, key="dx_report")


settings = ui.page_setup("pages/diagnostics.py")
with ui.page_errors():
    render(settings)
