"""Live: what Ollama, its runner and the host are doing now, next to the trials.

A header refreshed every `live_refresh_s` (a fragment; the switch turns it off): model state
(Loaded, or Stopping for 3m12s in red), runner PID, RSS and CPU, the llama-server runner's slots
(busy slots, tokens/s; red for a busy slot without progress or a runner not answering /slots),
free memory, pressure, swap-out rate, flash attention, and how fresh each source is. Below, four
panels on one time axis over the last `live_window_min` minutes: latency, failure rate, free
memory, swap-outs with pressure (and the runner's tokens/s and busy slots when it was read);
state-change events and actions are markers on every panel. The data is what the sampler
writes to the sidecar (oasis_ops.sampler.views); every query is cached with a TTL and a bound.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from oasis_ops.control import control_dir_for, control_summary
from oasis_ops.demo.world import REPLAY_DB_ENV
from oasis_ops.errors import DatabaseMissing, DataError
from oasis_ops.fmt import fmt_duration
from oasis_ops.probes import human_bytes
from oasis_ops.sampler import views
from oasis_ops.sampler.runsource import RunSource, classify
from oasis_ops.sampler.views import LiveHeader, LiveWindow
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from oasis_ops.status import flash_attention_now
from pages import _common as ui

CACHE_MAX_ENTRIES = 32
HEADER_TTL_S = 5
WINDOW_TTL_S = 30
FLASH_TTL_S = 60
WARNINGS_TTL_S = 30  # the sampler evaluates its warnings every 30 s: reading them more often only adds sidecar opens
CHART_REFRESH_S = 30.0  # the charts refresh more slowly than the header (fewer chart redraws)
WINDOW_CHOICES = [15, 30, 60, 180, 360]
AUTO_KEY = "live_auto"
WINDOW_KEY = "live_window"


def _now_key(now: datetime, step_s: int) -> datetime:
    """`now` floored to `step_s`: tabs refreshing within the same step share one cache entry."""
    return now.replace(microsecond=0) - timedelta(seconds=now.second % step_s)


@st.cache_data(ttl=HEADER_TTL_S, max_entries=CACHE_MAX_ENTRIES, show_spinner=False)
def cached_header_rows(sidecar_path: str, key: str, now_key: datetime) -> views.HeaderRows:
    return views.read_header_rows(Sidecar(sidecar_path), now_key - timedelta(hours=1))


@st.cache_data(ttl=WINDOW_TTL_S, max_entries=CACHE_MAX_ENTRIES, show_spinner=False)
def cached_window(sidecar_path: str, key: str, start: datetime, end: datetime) -> LiveWindow:
    return views.live_window(Sidecar(sidecar_path), start, end)


@st.cache_data(ttl=WARNINGS_TTL_S, max_entries=CACHE_MAX_ENTRIES, show_spinner=False)
def cached_warnings(sidecar_path: str, key: str, now_key: datetime) -> list[Any]:
    """The sampler's open early-warning episodes (oasis_ops.earlywarning.live)."""
    from oasis_ops.earlywarning.live import open_warnings

    path = Path(sidecar_path)
    return open_warnings(Sidecar(path), now_key) if path.exists() else []


@st.cache_data(ttl=FLASH_TTL_S, max_entries=8, show_spinner=False)
def cached_flash(key: str, _settings: Settings) -> dict[str, Any]:
    return flash_attention_now(_settings)


def refresh_period(settings: Settings) -> float | None:
    """Seconds between header refreshes, None when the switch (or the setting) turns it off."""
    period = float(settings.live_refresh_s) or 5.0
    return period if st.session_state.get(AUTO_KEY, float(settings.live_refresh_s) > 0) else None


# --- header ---------------------------------------------------------------------------------------
def _model_line(model: views.ModelState, now: datetime, emulated: bool = False) -> str:
    if model.state == "stopping":
        # From stopping_since at render time: the cached header may be a few seconds old.
        since = (now - model.stopping_since).total_seconds() if model.stopping_since else model.stopping_for_s
        state = f":red[**Stopping for {fmt_duration(since)}**]"
    elif model.state == "loaded" and model.ollama_state == "stopping":
        # Judged from evidence (oasis_ops.modelstate): it keeps serving; Ollama's expiry is stale.
        state = ":green[**Loaded · busy**] :gray[(Ollama shows Stopping: its expiry is stale, renewed only when the runner goes idle)]"
    elif model.state == "loaded":
        state = ":green[**Loaded**]"
    else:
        state = f":gray[{model.state}]"
    stale = f" · :orange[sampled {ui.fmt_age(model.age_s)} ago]" if model.age_s > 15 else ""
    badge = " :orange-badge[:material/science: EMULATED: the demo's stand-in, no real inference]" if emulated else ""
    return f"#### `{model.model}` {state}{stale}{badge}"


def show_models(header: LiveHeader, now: datetime, flash: dict[str, Any], historical: bool = False) -> None:
    active = header.active_models
    if not active:
        gone = [m for m in header.models if m.state == "gone"]
        last = f" (last: `{gone[-1].model}`, gone {ui.fmt_age(gone[-1].age_s)} before)" if gone and historical else (
            f" (last: `{gone[-1].model}`, gone {ui.fmt_age(gone[-1].age_s)} ago)" if gone else "")  # fmt: skip
        st.markdown(f"#### No model loaded{last}" + (" at its last sample" if historical else ""))
        return
    for model in active[:4]:
        st.markdown(_model_line(model, now, model.model in flash.get("emulated", ())))
        vram = model.runner_vram_bytes
        cols = st.columns(5 if vram is not None else 4)
        cols[0].metric("Runner PID", str(model.runner_pid) if model.runner_pid is not None else "–", border=True,
                       help="The runner process serving this model (a child of `ollama serve`).")  # fmt: skip
        cols[1].metric("Runner RSS", human_bytes(model.runner_rss_bytes) if model.runner_rss_bytes is not None else "–", border=True)
        cpu = model.runner_cpu_percent
        cols[2].metric("Runner CPU", f"{cpu:.1f}%" if cpu is not None and cpu == cpu else "–", border=True,
                       help="High CPU while the split says 100% GPU is the signature of a compute graph spilled to the CPU.")  # fmt: skip
        cols[3].metric("CPU/GPU split", model.processor or "–", border=True, help="As `ollama ps` prints it: memory at load time, not where compute runs.")
        if vram is not None:  # Linux GPUs (a Mac's GPU memory is the runner's RSS)
            cols[4].metric("Runner VRAM", human_bytes(vram), border=True,
                           help="GPU memory the runner process holds, on every GPU (NVML, nvidia-smi or rocm-smi). Far below "
                                "the model's size with a CPU/GPU split: layers spilled to the CPU.")  # fmt: skip
        show_runner_slots(model)
        if not historical:  # flash attention is read from the Ollama of now, not recorded per run
            st.caption(flash_line(flash.get("models", {}).get(model.model)))


RUNNER_HELP = ("From the llama-server runner's own GET /slots (and /metrics when it was started with --metrics; Ollama does not "
               "pass it, so tokens/s then comes from the slots' n_decoded), read every few seconds by the sampler. Red: a busy "
               "slot that made no progress (no token, no prompt batch) for 30 s or more, or a runner that does not answer "
               "/slots at all (stuck in a decode, or stopped).")  # fmt: skip


def show_runner_slots(model: views.ModelState) -> None:
    """The runner's slots line under its PID/RSS/CPU (Ollama >= 0.30, llama-server runners only)."""
    line = views.runner_line(model.runner)
    if line:
        stale = f" · :orange[read {ui.fmt_age(model.runner.age_s)} ago]" if model.runner and model.runner.age_s > 15 else ""
        st.markdown(line + stale, help=RUNNER_HELP)


def flash_line(flash: dict[str, Any] | None) -> str:
    """One line on flash attention for a model: the effective value, what was asked, where read."""
    if not flash:
        return "Flash attention: not known yet for this model"
    value = flash.get("value") or "unknown"
    colour = "orange" if value == "on" else "gray"
    asked = f" (asked: {flash['setting']})" if flash.get("setting") and flash.get("setting") != value else ""
    return f"Flash attention :{colour}[**{value}**]{asked}, from {flash.get('source')}: {flash.get('detail')}"


def show_host(header: LiveHeader, flash: dict[str, Any]) -> None:
    host = header.host or {}
    cols = st.columns(5)
    pages = host.get("pages_free")
    page_size = host.get("page_size")
    pages_text = f"{int(pages):,} pages of {int(page_size):,} B" if pages is not None and page_size else "pages unknown"
    cols[0].metric("Free memory", human_bytes(host.get("mem_free_bytes")) if host else "–", border=True, help=pages_text)
    cols[0].caption(pages_text)
    cols[1].metric("Available", human_bytes(host.get("mem_available_bytes")) if host else "–", border=True)
    pressure = host.get("pressure")
    level = header.pressure_level or "unknown"
    cols[2].metric("Pressure", f"{level}" if host else "–", border=True,
                   help=f"0-100 scale: {pressure:.1f}" if pressure is not None else "not reported by this host")  # fmt: skip
    if pressure is not None:
        colour = {"warn": "orange", "critical": "red"}.get(level, "green")
        cols[2].caption(f":{colour}[{pressure:.1f} / 100]")
    rate = header.swapouts_per_min
    cols[3].metric("Swap-outs / min", ui.fmt_compact(rate), border=True,
                   help="Pages swapped out per minute, over the newest minute of samples (k = thousand, M = million).")
    if not flash:  # a finished run or replay: flash attention of today's Ollama says nothing about it
        cols[4].metric("Flash attention", "–", border=True, help="Read from the Ollama of now: not shown for a past run.")
        cols[4].caption("not recorded with the run")
        return
    models = flash.get("models") or {}
    server = flash.get("server") or {}
    values = sorted({str(m.get("value") or "unknown") for m in models.values()})
    shown = "/".join(values) if values else (server.get("value") or "per model")
    source = "per loaded model, see above" if values else server.get("source")
    cols[4].metric("Flash attention", shown, border=True, help=str(server.get("detail") or ""))
    cols[4].caption(f"from {source}")


def freshness_parts(header: LiveHeader, trials_stale_s: float | None) -> list[str]:
    parts = [f"trials snapshot {ui.fmt_age(trials_stale_s)} old" if trials_stale_s is not None else "no trial snapshot"]
    parts.append(f"last host sample {ui.fmt_age(header.host_age_s)} ago" if header.host_age_s is not None else "no host sample yet")
    parts.append(f"last /api/ps sample {ui.fmt_age(header.ps_age_s)} ago" if header.ps_age_s is not None else "no /api/ps sample")
    beat = header.heartbeat
    if beat is None:
        parts.append("sampler never ran on this sidecar")
    elif beat.running:
        parts.append(f"sampler running (pid {beat.pid}, last tick {ui.fmt_age(beat.age_s)} ago, {beat.errors or 0} errors)")
    else:
        parts.append(f":red[sampler is down (last tick {fmt_duration(beat.age_s)} ago)]")
    return parts


def control_line(control: dict[str, Any] | None) -> str | None:
    """The control channel's applier in one line: the proxy's queue, or the harness helper's state."""
    if not control:
        return None
    who = "Proxy" if control["kind"] == "proxy" else "Harness"
    if not control["alive"]:
        return f":gray[:material/link_off: {who}: {control['summary']}]"
    parts = [f"{control['in_flight'] or 0} in flight"]
    if control["queued"] is not None:
        parts.append(f"{control['queued']} queued")
    parts.append("**paused**" if control["paused"] else f"max concurrency {control['max_concurrency']}")
    line = f":material/traffic: {who}: " + " · ".join(parts)
    if control["held"]:
        line += f" · :orange[holding new requests: {control['held']}]"
    return line


def show_source(source: RunSource) -> None:
    """One line saying what the page shows: a live run, a finished run or a replay."""
    badge = {"live": "green", "new": "green", "finished": "gray", "replay": "violet"}.get(source.kind, "gray")
    icon = {"live": ":material/sensors:", "new": ":material/sensors:", "finished": ":material/history:",
            "replay": ":material/replay:"}.get(source.kind, "")  # fmt: skip
    when = f" · as of {ui.fmt_utc(source.as_of)}" if source.as_of is not None else ""
    st.markdown(f":{badge}-badge[{icon} {source.label}]{when} · :gray[{source.detail}]")


def show_sampler_state(header: LiveHeader, db: str, source: RunSource | None = None) -> None:
    beat = header.heartbeat
    start_cmd = f"`oasis-ops sample --db {db}`"
    if source is not None and source.historical:
        # A finished run or a replay: no advice (sampling now would add today's telemetry to its
        # sidecar) and no warning about today's Ollama; what it recorded is said instead.
        if not header.sidecar_exists:
            st.info("**No telemetry was recorded for this run** (no sampler ran beside it): only its trials are shown.",
                    icon=":material/sensors_off:")  # fmt: skip
        return
    if not header.sidecar_exists:
        st.info(f"**No telemetry yet** for this run (`{header.sidecar_path}` does not exist). Start the sampler with {start_cmd}, "
                "or the dashboard with the `sampler` setting on (the default).", icon=":material/sensors_off:")  # fmt: skip
    elif (beat is None or not beat.running) and (source is None or source.sampler_advice):
        age = f"last tick {fmt_duration(beat.age_s)} ago" if beat is not None and beat.age_s is not None else "it never ticked"
        stopped = " It was stopped." if beat is not None and beat.stopped_at is not None else ""
        st.warning(f"**The sampler is down** ({age}).{stopped} Memory, model state and runner numbers below are stale. "
                   f"Start it with {start_cmd}.", icon=":material/sensors_off:")  # fmt: skip
    if header.ollama_reachable is False:
        st.error(f"**Ollama is not reachable** ({header.ollama_detail or 'no answer'}).", icon=":material/cloud_off:")
    elif header.ps_blocked_since is not None:
        since = (datetime.now(UTC) - header.ps_blocked_since).total_seconds()
        st.warning(f"**Ollama answers, but `/api/ps` has not for {fmt_duration(since)}**: its scheduler is waiting, "
                   "from Ollama 0.32.4 on an unload (the runner killed and reaped) or on a ping of a runner that does "
                   "not answer. Model rows below are the last ones /api/ps gave; the runners are read directly.",
                   icon=":material/hourglass_top:")  # fmt: skip


KIND_TITLES = {"memory_exhaustion": "Memory running out", "latency_drift": "Latency rising", "stuck_stopping": "Stuck Stopping",
               "backlog": "Work piling up", "vram_exhaustion": "GPU memory running out"}  # fmt: skip


def action_button(action: str) -> tuple[str, str, str, dict[str, Any]]:
    """(label, request_action's action, model, params) for a warning's `action` as the CLI names it."""
    word, _, rest = action.partition(" ")
    if word == "concurrency":
        return f"Lower concurrency to {rest}", "concurrency", "", {"n": int(rest)}
    if word == "recover":
        return f"Recover {rest}", "recover", rest, {}
    return word.capitalize(), word, rest, {}


def warning_text(warning: Any, now: datetime) -> str:
    title = KIND_TITLES.get(warning.kind, warning.kind)
    when = ""
    if warning.eta is not None:
        left = (warning.eta - now).total_seconds()
        when = (f" · **{'now' if left <= 0 else 'in ' + fmt_duration(left)}** ({ui.fmt_utc(warning.eta, with_date=False)})"
                if warning.kind == "memory_exhaustion" else "")  # fmt: skip
    since = ui.fmt_age((now - warning.at).total_seconds())
    return f"**{title}**{when} · {warning.message} · :gray[raised {since} ago]"


def show_warnings(warnings: list[Any], now: datetime, settings: Settings, db: str, actions_apply: bool) -> None:
    """Active warnings as banners, the countdown to their eta, the one-click action beside each
    (it opens the same confirmation dialog as the action bar)."""
    for n, warning in enumerate(sorted(warnings, key=lambda w: (w.severity != "critical", w.at))[:3]):
        text_col, button_col = st.columns([5, 1], vertical_alignment="center")
        with text_col:
            box = st.error if warning.severity == "critical" else st.warning
            box(warning_text(warning, now), icon=":material/notifications_active:")
        if actions_apply:
            label, action, model, params = action_button(warning.action)
            if button_col.button(label, key=f"warn_{n}_{warning.kind}", width="stretch", type="primary"):
                try:
                    from pages._actions import request_action  # type: ignore[import-not-found]
                except ModuleNotFoundError:
                    return
                request_action(action, settings, db, model or None, **params)


def render_action_bar(slot: Any, header: LiveHeader, settings: Settings, db: str, source: RunSource | None = None) -> None:
    """Issue 5's action bar (pages/_actions.py), when present: drawn in the slot at the top; only
    where it acts on what the page shows (the Ollama of now, next to a live run)."""
    if source is not None and not source.actions_apply:
        with slot:
            st.caption(f":material/block: No recovery actions here: they act on the Ollama this console reaches now "
                       f"(`{settings.ollama_host}`), not on this {source.label.lower()}. Pick the live run in the sidebar to act.")  # fmt: skip
        return
    try:
        from pages._actions import render_action_bar as action_bar  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name != "pages._actions":
            raise
        return
    with slot:
        action_bar(header, settings, db)


def is_replay(db: str) -> bool:
    """The demo's replayed incident (the database the demo offers as its replay)."""
    replay = os.environ.get(REPLAY_DB_ENV, "").strip()
    try:
        return bool(replay) and Path(replay).resolve() == Path(db).expanduser().resolve()
    except OSError:
        return False


def run_source(settings: Settings, db: str, header: LiveHeader, now: datetime) -> tuple[RunSource, float | None]:
    """What the picked database is (live run, finished run, replay) and its trial snapshot's age."""
    fresh = None
    try:
        fresh = ui.refresh(ui.source_handle(db, settings))
    except DataError:  # missing or unreadable: judged from the sidecar alone
        pass
    source = classify(now=now, heartbeat=header.heartbeat, db_exists=fresh is not None or Path(db).expanduser().exists(),
                      trials_live=bool(fresh and fresh.live), newest_trial_at=fresh.newest_trial_at if fresh else None,
                      replay=is_replay(db))  # fmt: skip
    return source, fresh.stale_s if fresh is not None else None


def history_parts(header: LiveHeader, source: RunSource) -> list[str]:
    """The caption under a finished run's header: when its telemetry and trials ended."""
    beat = header.heartbeat
    parts = [f"last sample {ui.fmt_utc(source.as_of)}" if source.as_of is not None else "nothing recorded"]
    if beat is not None and beat.started_at is not None:
        parts.append(f"sampler recorded from {ui.fmt_utc(beat.started_at)} ({beat.ticks or 0:,} ticks)")
    return parts


def host_badge(header: LiveHeader, source: RunSource) -> str:
    """Whose memory the numbers above are, next to them: simulated, recorded, or this machine's."""
    origin = (header.host or {}).get("source") or "no sample"
    if header.simulated:
        return ":orange-badge[:material/science: SIMULATED host memory: the demo emulator's, not this machine's]"
    beat = header.heartbeat
    where = beat.host if beat is not None and beat.host else "its host"
    if source.kind == "replay":
        return f":violet-badge[:material/replay: RECORDED host memory: {where}'s ({origin}), replayed]"
    if source.historical:
        return f":gray-badge[:material/history: host memory recorded on {where} ({origin})]"
    return f":blue-badge[:material/memory: host memory of {where} ({origin}), read by the sampler]"


def header_fragment(settings: Settings, db: str, sidecar_path: str) -> None:
    now = datetime.now(UTC)
    key = ui.settings_key(settings)
    # Rows are cached (shared by tabs); ages are computed now, so they never lag the cache.
    header = views.live_header_at(cached_header_rows(sidecar_path, key, _now_key(now, HEADER_TTL_S)), now)
    source, snapshot_age_s = run_source(settings, db, header, now)
    shown_at = now
    if source.as_of is not None:  # a finished run or replay: its state as of its last sample
        shown_at = source.as_of
        header = views.live_header_at(cached_header_rows(sidecar_path, key, source.as_of), source.as_of)
    flash = cached_flash(key, settings) if not source.historical else {}
    if not source.historical:  # the sampler's warnings are about now
        show_warnings(cached_warnings(sidecar_path, key, _now_key(now, WARNINGS_TTL_S)), now, settings, db, source.actions_apply)
    action_slot = st.container()  # the action bar (issue 5) goes first, above the state it acts on
    with st.container(border=True):
        show_source(source)
        show_sampler_state(header, db, source)
        show_models(header, shown_at, flash, historical=source.historical)
        line = None if source.historical else control_line(control_summary(control_dir_for(db, settings)))
        if line:
            st.markdown(line)
        show_host(header, flash)
        st.markdown(host_badge(header, source))
        if source.historical:
            st.caption(" · ".join(history_parts(header, source)))
        else:
            st.caption(" · ".join(freshness_parts(header, snapshot_age_s)) + f" · as of {ui.fmt_utc(now, with_date=False)}")
    render_action_bar(action_slot, header, settings, db, source)


# --- charts ---------------------------------------------------------------------------------------
def charts_section(settings: Settings, db: str, sidecar_path: str, minutes: int) -> None:
    """The four panels over the window, markers on each."""
    now = datetime.now(UTC)
    rollup: pd.DataFrame | None = None
    newest: datetime | None = None
    live = True
    note = ""
    try:
        handle = ui.source_handle(db, settings)
        fresh = ui.refresh(handle)
        newest, live = fresh.newest_trial_at, fresh.live
    except DatabaseMissing:
        handle = None
        note = f"The trial database `{db}` does not exist yet: latency and failures appear with the first trial."
    except DataError as exc:
        handle = None
        note = f"Trials cannot be read: {exc}"
    start, end = views.window_bounds(_now_key(now, 10), minutes, newest, live)
    start = start.replace(second=0, microsecond=0)  # whole minutes: the chart's axis starts on one (charts.time_domain)
    if handle is not None:
        version = ui.data_version(fresh)
        rollup = ui.cached_rollup(handle, handle.key, version, start, end, "1m", None, None)
    if rollup is None:
        rollup = views.empty_rollup(start, end)
    window = cached_window(sidecar_path, ui.settings_key(settings), start, end)
    anchor = "now" if live or newest is None else "the run's newest trial (the run is not live)"
    st.caption(f"{ui.fmt_utc(start, with_date=False)} → {ui.fmt_utc(end, with_date=False)}, the last {minutes} min before {anchor}"
               f" · telemetry in {window.bucket_s} s buckets · drag on the bottom strip to zoom · dashed lines: state changes "
               "and actions, labelled above the top panel where the labels fit (hover a line or its triangle for each)")  # fmt: skip
    if note:
        st.warning(note, icon=":material/database:")
    st.vega_lite_chart(spec=views.live_chart(rollup, window), width="stretch")


def render(settings: Settings) -> None:
    st.title("Live")
    db = ui.current_db(settings)
    if not db:
        ui.no_database_message()
        return
    sidecar_path = str(sidecar_path_for(db, settings))
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with right:
        st.toggle("Auto-refresh", value=float(settings.live_refresh_s) > 0, key=AUTO_KEY,
                  help=f"Refresh the header every {float(settings.live_refresh_s) or 5.0:g} s and the charts every {CHART_REFRESH_S:g} s.")  # fmt: skip
    with left:
        choices = sorted({int(settings.live_window_min), *WINDOW_CHOICES})
        minutes = st.selectbox("Window (minutes)", choices, index=choices.index(int(settings.live_window_min)), key=WINDOW_KEY)
    period = refresh_period(settings)


    @st.fragment(run_every=period)
    def live_header() -> None:
        with ui.page_errors():
            header_fragment(settings, db, sidecar_path)

    @st.fragment(run_every=max(period, CHART_REFRESH_S) if period else None)
    def live_charts() -> None:
        with ui.page_errors():
            charts_section(settings, db, sidecar_path, int(minutes))

    live_header()
    st.subheader("Trials and host memory")
    live_charts()
    if settings.prometheus_url:  # several hosts through the lab's Prometheus (pages/_hosts.py)
        from pages._hosts import hosts_section  # type: ignore[import-not-found]

        with ui.page_errors():
            hosts_section(settings, int(minutes))


settings = ui.page_setup("pages/live.py")
with ui.page_errors():
    render(settings)
