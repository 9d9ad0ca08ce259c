"""The post-mortem report button (Timeline and Diagnostics pages).

The report is built only when the button is clicked (Streamlit runs a callable `data` on
download), so an open page costs nothing. Errors become a small HTML page saying what went
wrong rather than a broken download.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

import streamlit as st

from oasis_ops.diagnosis.render import report_bytes
from oasis_ops.diagnosis.report import build_report
from oasis_ops.errors import OasisOpsError
from oasis_ops.settings import Settings


def report_html(db: str, settings: Settings, start: datetime | None = None, end: datetime | None = None,
                run_id: str | None = None, model: str | None = None) -> bytes:  # fmt: skip
    """The post-mortem of [start, end) (default: the latest run) as one HTML file."""
    try:
        return report_bytes(build_report(db, settings, start=start, end=end, run_id=run_id, model=model))
    except OasisOpsError as exc:
        return (f"<!DOCTYPE html><html><body><h1>No report</h1><p>{escape(str(exc))}</p></body></html>").encode()


def report_button(db: str, settings: Settings, *, start: datetime | None = None, end: datetime | None = None,
                  run_id: str | None = None, model: str | None = None, key: str = "report_download") -> None:  # fmt: skip
    """A download button for the HTML post-mortem of the range shown."""
    stem = (run_id or "range").replace("/", "_")
    st.download_button(
        "Post-mortem report (HTML)",
        data=lambda: report_html(db, settings, start, end, run_id, model),
        file_name=f"oasis-ops-postmortem-{stem}.html",
        mime="text/html",
        icon=":material/description:",
        on_click="ignore",
        key=key,
        help="Summary, impact, timeline, causes with evidence, memory, runner states, actions and charts: one offline HTML file.",
    )
