"""Recovery actions in the UI (issue 5): the action bar of the Live page, and the panels of the
Recovery page, with their confirmation dialogs.

Every button only records a *pending* action in st.session_state (with the exact target it
will hit: model, PID and create time, command line, RSS, how long it has been Stopping); the
dialog is opened from that state on every run until it is confirmed or cancelled. That keeps it
testable headless (AppTest cannot click buttons of a dialog opened by `if st.button():`) and
makes the confirmed target the one that is killed: hard_kill gets the confirmed (pid,
create_time) and refuses if it changed. The result appears inline; every attempt is an audit
row (requested_by=ui), a cancelled one (Cancel pressed, or the dialog closed) with outcome
`cancelled`, never `refused`: refusing is what oasis-ops does, cancelling what the user does.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from oasis_ops.actions import (
    ActionContext,
    ActionResult,
    audit,
    audit_log,
    cancelled,
    evict,
    hard_kill,
    pause,
    plan_kill,
    recover,
    resume,
    set_concurrency,
)
from oasis_ops.actions.episodes import StoppingEpisodes
from oasis_ops.control import RunnerState, concurrency_wording, pause_wording
from oasis_ops.errors import OasisOpsError
from oasis_ops.fmt import fmt_duration
from oasis_ops.modelstate import judge_all
from oasis_ops.probes import ModelProbe, ModelSnapshot
from oasis_ops.probes.ollama import OllamaClient
from oasis_ops.settings import Settings
from oasis_ops.watchdog import WatchdogPolicy, read_switch, write_switch
from pages import _common as ui

PENDING_KEY = "oasis_pending_action"
RESULT_KEY = "oasis_last_action_result"
AUDIT_WINDOW = timedelta(days=7)
ACTION_TITLES = {
    "evict": "Evict",
    "hard_kill": "Hard-kill",
    "recover": "Recover",
    "concurrency": "Set concurrency",
    "pause": "Pause",
    "resume": "Resume",
}


# --- live state -------------------------------------------------------------------------------
@dataclass
class _ProbeHolder:
    probe: ModelProbe
    episodes: StoppingEpisodes
    lock: threading.Lock


@st.cache_resource(max_entries=4, show_spinner=False)
def _probe_holder(key: str, _settings: Settings) -> _ProbeHolder:
    """One probe per settings per process: it keeps psutil objects, so CPU % has two looks."""
    client = OllamaClient(_settings.ollama_host, timeout_s=float(_settings.ollama_timeout_s))
    return _ProbeHolder(ModelProbe(client, models_dir=_settings.ollama_models or None), StoppingEpisodes(), threading.Lock())


def live_models(settings: Settings, ctx: ActionContext) -> tuple[list[ModelSnapshot], str | None]:
    """The models Ollama has loaded now, with their runners; or ([], why not)."""
    holder = _probe_holder(ui.settings_key(settings), settings)
    with holder.lock:
        try:
            holder.probe.serve_pid = ctx.current_serve_pid()
            snapshots = holder.probe.snapshot()
        except OasisOpsError as exc:
            return [], exc.message
        # Ollama's Stopping on a model that keeps serving is a stale expiry (oasis_ops.modelstate).
        judged = judge_all([snap.status for snap in snapshots], settings, datetime.now(UTC), sidecar=ctx.sidecar,
                           db=ctx.db or None)  # fmt: skip
        snapshots = [dataclasses.replace(snap, status=j) for snap, j in zip(snapshots, judged, strict=True)]
        holder.episodes.update(snapshots, ctx.sidecar)
        for n, snap in enumerate(snapshots):
            start = holder.episodes.start(snap)
            if start is not None and snap.status.stopping_since is not None and start < snap.status.stopping_since:
                status = dataclasses.replace(snap.status, stopping_since=start, stopping_for_s=(snap.ts - start).total_seconds())
                snapshots[n] = dataclasses.replace(snap, status=status)
    return snapshots, None


def context(settings: Settings, db: str) -> ActionContext:
    return ActionContext.from_settings(settings, db=db or None, requested_by="ui")


def with_context(settings: Settings, db: str, fn: Callable[[ActionContext], ActionResult]) -> ActionResult:
    ctx = context(settings, db)
    try:
        return fn(ctx)
    finally:
        ctx.close()


def state_badge(snap: ModelSnapshot) -> str:
    if snap.state == "stopping":
        return f":red-badge[:material/hourglass_top: Stopping for {fmt_duration(snap.status.stopping_for_s)}]"
    if snap.status.busy:  # Ollama shows Stopping, but it keeps serving: a stale expiry
        return ":green-badge[:material/check_circle: Loaded · busy]"
    return ":green-badge[:material/check_circle: Loaded]"


def runner_text(snap: ModelSnapshot) -> str:
    if snap.runner_pid is None:
        return "no runner process matched" + (f" ({snap.note})" if snap.note else "")
    # Only the runner's identity: its memory and CPU are the panel's (the sampler's) numbers, and
    # a second reading here, taken at another instant, would show the same fact twice, differently.
    # The confirmation dialog shows RSS as read just before the action.
    created = snap.runner_create_time
    since = f" · started {datetime.fromtimestamp(created, UTC):%H:%M:%S} UTC" if created else ""
    return f"runner pid **{snap.runner_pid}**{since}"


# --- pending actions and the dialog -----------------------------------------------------------
def request_action(action: str, settings: Settings, db: str, model: str | None = None, **params: Any) -> None:
    """Record what the user asked for, with exactly what it will do (the dialog shows it)."""
    pending: dict[str, Any] = {"action": action, "model": model, "params": params, "db": db, "lines": []}
    if action in ("hard_kill", "recover") and model:
        ctx = context(settings, db)
        try:
            plan = plan_kill(ctx, model)
        finally:
            ctx.close()
        pending["plan"] = plan.as_dict()
        if action == "hard_kill":
            pending["lines"] = plan.describe()
            pending["blocked"] = None if plan.ok else plan.refusal
        else:
            # The check afterwards is the dialog's checkbox: said once, there, where it can be switched off.
            grace = float(settings.evict_grace_s)
            pending["lines"] = [
                f"Soft-evict {model} (keep_alive 0); if it is still Stopping {grace:g} s after it began Stopping, hard-kill:",
                *["  " + line for line in plan.describe()],
            ]
    elif action == "evict":
        pending["lines"] = [f"Ask Ollama to unload {model} (keep_alive 0). It waits for in-flight requests; "
                            f"still Stopping after {float(settings.evict_grace_s):g} s counts as stuck."]  # fmt: skip
    elif action == "concurrency":
        pending["lines"] = [f"Ask the live runner to run at most {params['n']} trials at once (in-flight trials finish)."]
    elif action == "pause":
        pending["lines"] = ["Ask the live runner to start no new trials (in-flight trials finish)."]
    elif action == "resume":
        pending["lines"] = ["Ask the live runner to start trials again."]
    st.session_state[PENDING_KEY] = pending


def _cancel_pending(how: str = "the confirmation dialog was closed") -> None:
    """Audit the pending action as `cancelled` (the user said no) and forget it."""
    pending = st.session_state.pop(PENDING_KEY, None)
    if not pending:
        return
    settings = ui.app_settings()
    ctx = context(settings, pending.get("db") or "")
    try:
        result = cancelled(pending["action"], pending.get("model") or "runner", f"{how}: nothing was done",
                           pending.get("params") or {}, "ui")  # fmt: skip
        st.session_state[RESULT_KEY] = audit(ctx.sidecar, result).as_dict()
    finally:
        ctx.close()


def run_pending(settings: Settings, pending: dict[str, Any], respawn: bool) -> ActionResult:
    action, model, db, params = pending["action"], pending.get("model"), pending.get("db") or "", pending.get("params") or {}
    if action == "hard_kill":
        plan = pending.get("plan") or {}
        return with_context(settings, db, lambda c: hard_kill(c, str(model), plan.get("pid"), create_time=plan.get("create_time"),
                                                              verify_respawn=respawn))  # fmt: skip
    if action == "recover":
        plan = pending.get("plan") or {}  # kill only the runner the dialog showed
        return with_context(settings, db, lambda c: recover(c, str(model), ping=respawn, pid=plan.get("pid"),
                                                            create_time=plan.get("create_time")))  # fmt: skip
    if action == "evict":
        return with_context(settings, db, lambda c: evict(c, str(model)))
    if action == "concurrency":
        return with_context(settings, db, lambda c: set_concurrency(c, int(params["n"])))
    if action == "pause":
        return with_context(settings, db, pause)
    return with_context(settings, db, resume)


@st.dialog("Confirm", width="large", on_dismiss=_cancel_pending)
def confirm_dialog(settings: Settings) -> None:
    pending = st.session_state.get(PENDING_KEY)
    if not pending:
        return
    title = ACTION_TITLES.get(pending["action"], pending["action"])
    st.markdown(f"### {title}" + (f" `{pending['model']}`" if pending.get("model") else ""))
    st.markdown("This will:")
    st.code("\n".join(pending.get("lines") or []), language=None, wrap_lines=True)
    blocked = pending.get("blocked")
    if blocked:  # the lines above already say why ("Will NOT kill anything: ..."): not twice
        st.error("**Nothing to kill**: confirming is disabled.", icon=":material/block:")
    respawn = False
    if pending["action"] in ("hard_kill", "recover"):
        respawn = st.checkbox("Afterwards, send a tiny request and check that a new runner answers", value=True, key="dlg_respawn")
    left, right = st.columns(2)
    confirmed = left.button(f"Confirm {title.lower()}", type="primary", key="dlg_confirm", width="stretch", disabled=bool(blocked))
    if right.button("Cancel", key="dlg_cancel", width="stretch"):
        _cancel_pending("Cancel pressed in the confirmation dialog")
        st.rerun()
    if confirmed:
        with st.spinner(f"{title} in progress…"):
            result = run_pending(settings, pending, respawn)
        st.session_state.pop(PENDING_KEY, None)
        st.session_state[RESULT_KEY] = result.as_dict()
        st.rerun()


def pending_dialog(settings: Settings) -> None:
    """Open the confirmation for the pending action, if any (call once per run)."""
    if st.session_state.get(PENDING_KEY):
        confirm_dialog(settings)


def show_last_result() -> None:
    result = st.session_state.get(RESULT_KEY)
    if not result:
        return
    text = f"**{ACTION_TITLES.get(result['action'], result['action'])}: {result['outcome']}.** {result['message']}"
    if result["outcome"] in ("done", "dry_run"):
        st.success(text, icon=":material/task_alt:")
    elif result["outcome"] == "cancelled":
        st.info(text, icon=":material/cancel:")
    elif result["outcome"] in ("stuck", "not_acknowledged"):
        st.warning(text, icon=":material/warning:")
    else:
        st.error(text, icon=":material/block:")
    if result.get("detail", {}).get("audit_error"):
        st.caption(f":orange[Not audited: {result['detail']['audit_error']}]")
    with st.expander("Details"):
        st.json(result, expanded=False)


# --- panels ---------------------------------------------------------------------------------
def model_buttons(settings: Settings, db: str, snap: ModelSnapshot, key: str) -> None:
    cols = st.columns(3)
    if cols[0].button("Evict", key=f"{key}_evict_{snap.model}", icon=":material/eject:", width="stretch",
                      help="Soft unload (keep_alive 0)"):  # fmt: skip
        request_action("evict", settings, db, snap.model)
    if cols[1].button("Hard-kill", key=f"{key}_kill_{snap.model}", icon=":material/dangerous:", width="stretch",
                      help="SIGKILL exactly this model's verified runner process"):  # fmt: skip
        request_action("hard_kill", settings, db, snap.model)
    if cols[2].button("Recover", key=f"{key}_recover_{snap.model}", icon=":material/healing:", width="stretch", type="primary",
                      help="Evict, wait, hard-kill if still Stopping, check a new runner answers"):  # fmt: skip
        request_action("recover", settings, db, snap.model)


def models_panel(settings: Settings, db: str, key: str, *, detailed: bool, header: Any = None) -> None:
    ctx = context(settings, db)
    try:
        snapshots, error = live_models(settings, ctx)
    finally:
        ctx.close()
    if error:
        known = [m for m in getattr(header, "active_models", []) if m.runner_pid is not None]
        if not known:
            st.warning(f"**No recovery actions: Ollama cannot be asked** ({error}).", icon=":material/cloud_off:")
            return
        # /api/ps can be blocked while a runner is stuck (from Ollama 0.32.4): recovery is needed most
        # then. A hard-kill does not need /api/ps: it finds the runner by the model's blob (manifest)
        # among the children of `ollama serve` and verifies it before any signal.
        st.warning(f"**Ollama's /api/ps does not answer** ({error}). The models below are the sampler's last "
                   "samples; Hard-kill and Recover find and verify the runner without /api/ps.", icon=":material/cloud_off:")  # fmt: skip
        for model in known:
            with st.container(border=True):
                left, right = st.columns([3, 2], vertical_alignment="center")
                left.markdown(f"**{model.model}** :gray-badge[last seen {model.state}]  \nrunner pid **{model.runner_pid}** "
                              f"(sampled {fmt_duration(model.age_s)} ago)")  # fmt: skip
                with right:
                    cols = st.columns(2)
                    if cols[0].button("Hard-kill", key=f"{key}_kill_{model.model}", icon=":material/dangerous:", width="stretch",
                                      help="SIGKILL exactly this model's verified runner process"):  # fmt: skip
                        request_action("hard_kill", settings, db, model.model)
                    if cols[1].button("Recover", key=f"{key}_recover_{model.model}", icon=":material/healing:", width="stretch",
                                      type="primary", help="Evict, wait, hard-kill if still Stopping, check a new runner answers"):  # fmt: skip
                        request_action("recover", settings, db, model.model)
        return
    if not snapshots:
        st.info("No model is loaded in Ollama right now: nothing to recover.", icon=":material/check_circle:")
        return
    for snap in snapshots:
        with st.container(border=True):
            left, right = st.columns([3, 2], vertical_alignment="center")
            with left:
                st.markdown(f"**{snap.model}** {state_badge(snap)}  \n{runner_text(snap)}")
                if detailed and snap.runner_cmdline:
                    st.code(" ".join(snap.runner_cmdline), language=None, wrap_lines=True)
                if detailed and snap.note:
                    st.caption(snap.note)
            with right:
                model_buttons(settings, db, snap, key)


def runner_state_line(state: RunnerState | None, requested: dict[str, Any] | None) -> str:
    """Requested against applied, in words: 'max concurrency **2**, applied' / 'pause requested,
    not yet applied' / 'paused' / 'running' (oasis_ops.control's wording)."""
    want = requested.get("max_concurrency") if requested else None
    want_paused = requested.get("paused") if requested else None
    want_paused = want_paused if isinstance(want_paused, bool) else None
    if state is None:
        asked = []
        if want is not None:
            asked.append(f"max concurrency {want}")
        if want_paused is not None:
            asked.append("paused" if want_paused else "running")
        wish = f"requested: {', '.join(asked)}" if asked else "nothing requested yet"
        return f"{wish} · **no runner has acknowledged anything** (is the harness using `RunnerControl`?)"
    age = fmt_duration(state.heartbeat_age_s) if state.heartbeat_age_s is not None else "never"
    alive = ":green-badge[runner alive]" if state.alive else ":red-badge[runner not responding]"
    applied = state.max_concurrency
    if want is not None and applied is not None and want != applied:
        concurrency = f"max concurrency **{want}** requested, not yet applied (runner at **{applied}**)"
    elif applied is not None and want is not None:
        concurrency = f"max concurrency: requested **{want}**, applied **{applied}**"
    elif applied is not None:
        concurrency = f"max concurrency **{applied}** (nothing requested through oasis-ops)"
    else:
        concurrency = concurrency_wording(want, applied)
    paused = pause_wording(want_paused, state.paused, alive=state.alive)
    in_flight = f"{state.in_flight} in flight" if state.in_flight is not None else "in flight unknown"
    return f"{alive} pid {state.pid} · {concurrency} · **{paused}** · {in_flight} · heartbeat {age} ago"


def control_panel(settings: Settings, db: str, key: str) -> None:
    ctx = context(settings, db)
    try:
        if ctx.control is None:
            st.info("No control directory: choose a trial database (the runner's control directory sits beside it).")
            return
        try:
            state = ctx.control.runner_state()
            requested = ctx.control.requested()
        except OasisOpsError as exc:
            st.error(f"**Control directory unusable:** {exc}", icon=":material/error:")
            return
    finally:
        ctx.close()
    st.markdown(runner_state_line(state, requested))
    current = (state.max_concurrency if state else None) or (requested or {}).get("max_concurrency") or 1
    cols = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    n = cols[0].number_input("Max concurrency", min_value=1, max_value=256, value=int(current), step=1, key=f"{key}_n")
    if cols[1].button("Set", key=f"{key}_set_n", icon=":material/tune:", width="stretch"):
        request_action("concurrency", settings, db, n=int(n))
    if cols[2].button("Pause", key=f"{key}_pause", icon=":material/pause:", width="stretch"):
        request_action("pause", settings, db)
    if cols[3].button("Resume", key=f"{key}_resume", icon=":material/play_arrow:", width="stretch"):
        request_action("resume", settings, db)


def watchdog_panel(settings: Settings, db: str) -> None:
    ctx = context(settings, db)
    try:
        switch = read_switch(ctx.control.dir if ctx.control else None, settings)
        policy = WatchdogPolicy.from_settings(settings)
        cols = st.columns([1, 1, 3], vertical_alignment="center")
        enabled = cols[0].toggle("Watchdog", value=switch.enabled, key="wd_enabled", disabled=ctx.control is None,
                                 help="Automatic recovery; persisted in the control directory so the sampler and "
                                      "`oasis-ops watchdog` see it")  # fmt: skip
        dry_run = cols[1].toggle("Dry run", value=switch.dry_run, key="wd_dry_run", disabled=ctx.control is None,
                                 help="Only log (audit) what it would do")  # fmt: skip
        cols[2].markdown(switch.describe() + (f" · changed by {switch.updated_by} at {ui.fmt_utc(switch.updated_at)}"
                                              if switch.updated_at else ""))  # fmt: skip
        if (enabled, dry_run) != (switch.enabled, switch.dry_run):
            st.session_state[RESULT_KEY] = write_switch(ctx, enabled, dry_run).as_dict()
            st.rerun()
    finally:
        ctx.close()
    p = policy.as_dict()
    guard = "lower concurrency to 1" if p["guard_action"] == "concurrency" else "pause the runner"
    st.caption(
        f"(a) hard-kill a runner whose model has been Stopping longer than **{p['stopping_s']:g} s** while trials are not "
        f"completing; at most one kill per model per {p['kill_interval_min']:g} min, never twice for the same stuck state. "
        f"(b) when memory pressure reaches **{p['max_pressure']:g}** or available memory drops below **{p['min_free_gb']:g} GB**, "
        f"{guard}; restore after **{p['restore_min']:g} min** of recovery. Settings: `watchdog_stopping_s`, "
        "`watchdog_max_pressure`, `watchdog_min_free_gb`, `watchdog_guard_action`, `watchdog_restore_min`. "
        "The sampler runs it each tick; headless: `oasis-ops watchdog --db PATH`."
    )


@st.cache_data(ttl=5, max_entries=8, show_spinner=False)
def cached_audit(sidecar_path: str, version: int) -> pd.DataFrame:
    from oasis_ops.sidecar import Sidecar

    return audit_log(Sidecar(sidecar_path), datetime.now(UTC) - AUDIT_WINDOW, max_rows=200)


def audit_table(settings: Settings, db: str) -> None:
    ctx = context(settings, db)
    try:
        if ctx.sidecar is None:
            st.info("No sidecar: choose a trial database to see the audit log.")
            return
        version = hash(json.dumps(st.session_state.get(RESULT_KEY) or {}, default=str))  # fresh after each action
        frame = cached_audit(str(ctx.sidecar.path), version)
    finally:
        ctx.close()
    if frame.empty:
        st.caption("No action recorded yet.")
        return
    st.dataframe(
        frame[["ts", "action", "target", "requested_by", "outcome", "message", "duration_ms"]],
        hide_index=True,
        column_config={
            "ts": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "duration_ms": st.column_config.NumberColumn("ms", format="%.0f"),
            "message": st.column_config.TextColumn("message", width="large"),
        },
    )


# --- the Live page's action bar ----------------------------------------------------------------
def render_action_bar(header: Any = None, settings: Settings | None = None, db: str | None = None) -> None:
    """The Live page's action bar: per loaded model Evict / Hard-kill / Recover (live runner PID
    shown), runner Pause / Resume, the last result inline, and the confirmation dialog.
    `header` (the Live page's LiveHeader) is accepted for the page's convenience; the bar
    probes live state itself, since an action must target what is running now."""
    settings = settings or ui.app_settings()
    db = ui.current_db(settings) if db is None else db
    with st.container(border=True):
        st.markdown("**Recovery** · confirm in a dialog · every attempt is audited")
        show_last_result()
        models_panel(settings, db, "bar", detailed=False, header=header)
        with st.expander("Runner control (concurrency, pause)"):
            control_panel(settings, db, "bar")
        recent_actions(settings, db)
    pending_dialog(settings)


def recent_actions(settings: Settings, db: str, limit: int = 3) -> None:
    """The newest audit rows, one line each (the Recovery page has the full table)."""
    ctx = context(settings, db)
    try:
        if ctx.sidecar is None:
            return
        version = hash(json.dumps(st.session_state.get(RESULT_KEY) or {}, default=str))
        frame = cached_audit(str(ctx.sidecar.path), version)
    finally:
        ctx.close()
    if frame.empty:
        return
    lines = [
        f"{ui.fmt_utc(row['ts'], with_date=False)} · {row['action']} {row['target'] or ''} · {row['outcome']} · {row['requested_by']}"
        for _, row in frame.head(limit).iterrows()
    ]
    st.caption("Recent actions (audit log): " + " | ".join(lines))
