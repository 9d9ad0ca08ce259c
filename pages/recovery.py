"""Recovery: end a stuck run in one click (issue 5).

Per loaded model: state, how long it has been Stopping, the runner process (PID, command line,
RSS, CPU) and Evict / Hard-kill / Recover; the live runner's control (requested vs applied
concurrency, heartbeat, Pause / Resume); the watchdog switch; the audit log. Every button opens
a confirmation that says exactly what will happen; the library does the work (oasis_ops.actions).
"""

from __future__ import annotations

import streamlit as st

from oasis_ops.settings import Settings
from pages import _actions as actions
from pages import _common as ui


def render(settings: Settings) -> None:
    st.title("Recovery")
    st.caption("Soft evict, verified hard-kill of one runner process, or both in one click; the live runner's "
               "concurrency and pause; the opt-in watchdog. Every attempt is audited.")  # fmt: skip
    db = ui.current_db(settings)
    head_left, head_right = st.columns([6, 1], vertical_alignment="center")
    head_left.markdown(f"Ollama at `{settings.ollama_host}`" + (f" · trial database `{db}`" if db else " · no trial database chosen"))
    if head_right.button("Refresh", icon=":material/refresh:", width="stretch", key="rc_refresh"):
        st.rerun()
    actions.show_last_result()

    st.subheader("Models")
    actions.models_panel(settings, db, "rc", detailed=True)

    st.subheader("Runner control")
    actions.control_panel(settings, db, "rc")

    st.subheader("Watchdog")
    actions.watchdog_panel(settings, db)

    st.subheader("Audit log")
    actions.audit_table(settings, db)
    actions.pending_dialog(settings)


settings = ui.page_setup("pages/recovery.py")
with ui.page_errors():
    render(settings)
