"""Demo: the switches of the demo world (`oasis-ops demo`).

Fault switches of the running Ollama emulator (the same endpoint `oasis-ops demo fault` uses),
the simulated harness as the control channel reports it, and the replayed incident: one click
opens it in the Timeline (it becomes the sidebar's database).

Every memory number says where it comes from, next to it: REAL (this machine's, which the live
demo runs on), RECORDED (the replay's: the write-up's Mac, reconstructed) or SIMULATED (the
emulator's simulated host, with `--host-memory simulated`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import streamlit as st

from oasis_ops.control import ControlChannel, control_dir_for, pause_wording
from oasis_ops.demo.faults import FAULTS
from oasis_ops.demo.faults_cli import describe, request_faults
from oasis_ops.demo.world import REPLAY_DB_ENV
from oasis_ops.diagnosis.incidents import label_memory
from oasis_ops.errors import OasisOpsError
from oasis_ops.probes import human_bytes
from oasis_ops.server import DEMO_DIR_ENV
from oasis_ops.settings import Settings
from oasis_ops.sidecar import Sidecar, sidecar_path_for
from pages import _common as ui

NOTE_KEY = "demo_note"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRESSURE_WORDS = {0.0: "normal", 50.0: "warn", 100.0: "critical"}


def _open_database(path: str) -> None:
    """Button callback: the sidebar's picker shows whatever DB_KEY holds on the next run."""
    st.session_state[ui.DB_KEY] = path
    st.session_state[ui.GOTO_KEY] = "pages/timeline.py"


def _switch_fault(url: str, name: str, key: str) -> None:
    on = bool(st.session_state.get(key))
    try:
        request_faults(url, {"name": name, "on": on, "params": {}})
        st.session_state[NOTE_KEY] = ("success", f"{name} switched {'on' if on else 'off'}")
    except OasisOpsError as exc:
        st.session_state[NOTE_KEY] = ("error", f"{name}: {exc}")


def _clear_faults(url: str) -> None:
    try:
        request_faults(url, {"clear": True})
        st.session_state[NOTE_KEY] = ("success", "every fault is off")
    except OasisOpsError as exc:
        st.session_state[NOTE_KEY] = ("error", str(exc))


def replay_panel(settings: Settings, replay_db: str) -> None:
    st.subheader("The replayed incident")
    if not replay_db:
        st.info("No replay in this demo. Write one with `oasis-ops demo replay --out DIR`.")
        return
    st.markdown(
        f"The write-up's day (2025-11-20, its times taken as UTC), rebuilt: `{replay_db}` with its sidecar, "
        "server.log and runner.log. The failure window is **17:58–18:04 UTC**, in the logs and on the "
        "console's axes alike; the model stays Stopping from the eviction at 18:04:13 to the end of the day."
    )
    replay_facts(settings, replay_db)
    live = str(Path(replay_db).parent.parent / "trials.duckdb")
    left, right = st.columns(2)
    left.button("Open the replayed incident in the Timeline", icon=":material/history:", on_click=_open_database,
                args=(replay_db,), width="stretch", key="demo_open_replay")  # fmt: skip
    right.button("Back to the live run", icon=":material/play_circle:", on_click=_open_database,
                 args=(settings.db or live,), width="stretch", key="demo_open_live")  # fmt: skip


def _free_bytes(row: dict[str, Any] | pd.Series) -> float | None:
    """Free memory as vm_stat counts it (Pages free x page size), else the sample's free bytes."""
    pages, page = pd.to_numeric(row.get("pages_free"), errors="coerce"), pd.to_numeric(row.get("page_size"), errors="coerce")
    if pd.notna(pages) and pd.notna(page) and page:
        return float(pages) * float(page)
    free = pd.to_numeric(row.get("mem_free_bytes"), errors="coerce")
    return float(free) if pd.notna(free) else None


def _pressure(value: Any, source: Any) -> str:
    number = pd.to_numeric(value, errors="coerce")
    if pd.isna(number):
        return "–"
    if str(source or "").startswith("macos"):
        return PRESSURE_WORDS.get(float(number), f"{float(number):.0f}")
    return f"{float(number):.0f}/100"


@st.cache_data(ttl=600, max_entries=4, show_spinner=False)
def _replay_memory(sidecar_path: str, mtime: float) -> dict[str, Any] | None:
    """The replay's worst host memory sample (lowest free memory) and its largest swap-out count."""
    host = Sidecar(sidecar_path).host_samples_since(EPOCH, max_rows=100_000)
    if host.empty:
        return None
    free = host.apply(_free_bytes, axis=1)
    worst = host.loc[free.idxmin()]
    return {
        "ts": worst["ts"], "free": float(free.min()), "total": worst.get("mem_total_bytes"),
        "swapouts": pd.to_numeric(host["swapouts"], errors="coerce").max(),
        "pressure": _pressure(pd.to_numeric(host["pressure"], errors="coerce").max(), worst.get("source")),
        "source": worst.get("source"),
    }  # fmt: skip


def replay_facts(settings: Settings, replay_db: str) -> None:
    """The replay's run by its span (the same text as the Timeline and the reports) and its host
    memory at its lowest, labelled RECORDED: the write-up's Mac, not this machine."""
    try:
        handle = ui.source_handle(replay_db, settings)
        span = ui.call(handle, lambda s: s.run_span(s.latest_run()))
        sidecar_path = sidecar_path_for(replay_db, settings)
        memory = _replay_memory(str(sidecar_path), sidecar_path.stat().st_mtime) if sidecar_path.exists() else None
        label = label_memory(memory.get("source"), Sidecar(sidecar_path), span.run_id if span else None) if memory else None
    except (OasisOpsError, OSError) as exc:
        st.caption(f":orange[The replay cannot be read: {exc}]")
        return
    if span is not None:
        st.caption(f"{span.label()} · {span.trials:,} trials, {span.failures:,} failed")
    if memory is None or label is None:
        return
    badge = label.badge
    cols = st.columns(3)
    total = f" of {human_bytes(memory['total'])}" if memory.get("total") is not None and pd.notna(memory["total"]) else ""
    cols[0].metric(f"Free memory at its lowest ({badge})", human_bytes(memory["free"]) + total, border=True,
                   help=f"Pages free × page size at {ui.fmt_utc(memory['ts'])}")  # fmt: skip
    cols[1].metric(f"Swap-outs by the end ({badge})", f"{int(memory['swapouts']):,}" if pd.notna(memory["swapouts"]) else "–",
                   border=True, help="vm_stat's cumulative Swapouts counter (pages)")  # fmt: skip
    cols[2].metric(f"Memory pressure at its worst ({badge})", memory["pressure"], border=True)
    st.caption(f"**{badge}**: {label.describe().split(': ', 1)[-1]}.")


def live_memory_panel(settings: Settings) -> None:
    """This machine's memory under the live run (the sampler's newest host sample), labelled REAL
    (or SIMULATED when the emulator runs a simulated host)."""
    if not settings.db:
        return
    sidecar = Sidecar(sidecar_path_for(settings.db, settings))
    try:
        row = sidecar.latest_host_sample() if sidecar.path.exists() else None
    except OasisOpsError:
        row = None
    if row is None:
        st.caption("No host sample from the sampler yet.")
        return
    label = label_memory(row.get("source"), sidecar, None)
    badge = label.badge
    cols = st.columns(3)
    total = f" of {human_bytes(row.get('mem_total_bytes'))}" if row.get("mem_total_bytes") else ""
    cols[0].metric(f"Free memory ({badge})", human_bytes(_free_bytes(row)) + total, border=True)
    cols[1].metric(f"Available ({badge})", human_bytes(row.get("mem_available_bytes")), border=True)
    cols[2].metric(f"Pressure ({badge})", _pressure(row.get("pressure"), row.get("source")), border=True)
    st.caption(f"Host memory under the live run, sampled at {ui.fmt_utc(row.get('ts'))}: **{badge}**: "
               f"{label.describe().split(': ', 1)[-1]}.")  # fmt: skip


def harness_panel(settings: Settings) -> None:
    st.subheader("Simulated harness")
    if not settings.db:
        st.info("No live trial database.")
        return
    channel = ControlChannel(control_dir_for(settings.db, settings))
    state = channel.runner_state()
    if state is None:
        st.warning(f"The harness has not written its state yet ({channel.state_path}).")
        return
    requested = channel.requested() or {}
    want_paused = requested.get("paused") if isinstance(requested.get("paused"), bool) else None
    cols = st.columns(5)
    cols[0].metric("Max concurrency", str(state.max_concurrency), border=True)
    cols[1].metric("Paused or running", pause_wording(want_paused, state.paused, alive=state.alive), border=True)
    cols[2].metric("In flight", str(state.in_flight), border=True)
    cols[3].metric("Completed", f"{state.completed or 0:,}", border=True)
    timeout = state.request_timeout_s
    cols[4].metric("Request timeout", f"{timeout:g} s" if timeout else "–", border=True)
    st.caption(f"{state.describe()} · change concurrency or pause it on the Recovery page · its log: "
               f"`{Path(settings.db).with_name('runner.log')}`")  # fmt: skip


def faults_panel(settings: Settings) -> None:
    st.subheader("Emulator faults")
    url = str(settings.ollama_host)
    try:
        faults: dict[str, Any] = request_faults(url)["faults"]
    except OasisOpsError as exc:
        st.warning(f"The emulator at `{url}` does not answer: {exc}")
        return
    st.caption(f"The Ollama emulator at `{url}`. The same switches from a shell: `oasis-ops demo fault NAME on --url {url}`. "
               "On the live run's real llama.cpp runner (smollm2:135m) they act on the real process: stall and "
               "stopping_deadlock SIGSTOP it (the second for good), latency_drift slows it with a SIGSTOP/SIGCONT duty "
               "cycle, runner_crash SIGKILLs it mid-answer, memory_pressure holds real memory on this machine (capped); with "
               "`oasis-ops demo --gpu`, vram_pressure fills the SIMULATED GPU so the model reloads split between CPU and GPU.")
    for name, entry in faults.items():
        if name not in FAULTS or (name == "vram_pressure" and entry.get("gpu") != "simulated"):
            continue  # vram_pressure only where the demo presents a GPU (`oasis-ops demo --gpu`)
        on = bool(entry.get("on"))
        key = f"demo_fault_{name}_{'on' if on else 'off'}"  # a new widget whenever the emulator's state changes
        left, right = st.columns([2, 5], vertical_alignment="center")
        left.toggle(name, value=on, key=key, on_change=_switch_fault, args=(url, name, key))
        right.caption(f"{FAULTS[name].help} · `{describe(name, entry)}`")
    st.button("All faults off", icon=":material/restart_alt:", on_click=_clear_faults, args=(url,), key="demo_clear")
    runners_panel(url)
    try:
        host = httpx.get(url.rstrip("/") + "/_demo/host", timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return  # the emulator runs on this machine's real memory (the Live page shows it)
    cols = st.columns(3)
    cols[0].metric("Free memory (SIMULATED)", human_bytes(host.get("mem_free_bytes")), border=True)
    cols[1].metric("Swap-outs (SIMULATED)", f"{host.get('swapouts', 0):,}", border=True)
    cols[2].metric("Pressure (SIMULATED)", f"{host.get('pressure', 0):g}", border=True)
    st.caption("**SIMULATED**: the emulator's simulated host (`--host-memory simulated`), not a real machine's memory.")


def runners_panel(url: str) -> None:
    """The emulator's runner processes: which are real llama.cpp, which emulated, and their state."""
    try:
        data = httpx.get(url.rstrip("/") + "/_demo/runners", timeout=2.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return
    runners = data.get("runners") if isinstance(data, dict) else None
    if not isinstance(runners, list) or not runners:
        return
    lines = []
    for r in runners:
        if not isinstance(r, dict):
            continue
        engine = "real llama.cpp" if r.get("engine") == "real" else "EMULATED"
        state = "stopped by a fault" if r.get("stopped_by_fault") else ("loading" if r.get("loading") else "running")
        lines.append(f"`{r.get('model')}`: {engine}, pid {r.get('pid')}, {state}, {r.get('in_flight', 0)} in flight, "
                     f"{r.get('waiting', 0)} waiting")  # fmt: skip
    hog = data.get("hog_pid") if isinstance(data, dict) else None
    if hog:
        lines.append(f"memory hog pid {hog} (memory_pressure on this machine)")
    st.caption(f"Ollama {data.get('version')} (emulated) · runners: " + " · ".join(lines))


def render(settings: Settings) -> None:
    st.title("Demo")
    demo_dir = os.environ.get(DEMO_DIR_ENV, "")
    if not demo_dir:
        st.info("This page belongs to the demo world: start it with `oasis-ops demo` (or `make run`).", icon=":material/science:")
        return
    st.caption(f"A live run against the Ollama emulator, and the write-up's incident replayed. Files in `{demo_dir}`.")
    if st.button("Refresh", icon=":material/refresh:", key="demo_refresh"):
        st.rerun()
    note = st.session_state.pop(NOTE_KEY, None)
    if note:
        (st.success if note[0] == "success" else st.error)(note[1])
    replay_panel(settings, os.environ.get(REPLAY_DB_ENV, ""))
    harness_panel(settings)
    live_memory_panel(settings)
    faults_panel(settings)


settings = ui.page_setup("pages/demo.py")
with ui.page_errors():
    render(settings)
