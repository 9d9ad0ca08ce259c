"""Streamlit-side helpers shared by every page: settings, the data source, errors, formatting.

The library does the work; this module only caches it per process (bounded), shows it, and
turns library errors into a short message saying what to do (never a traceback).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from oasis_ops.demo.world import REPLAY_DB_ENV
from oasis_ops.errors import (
    ConfigError,
    DatabaseCorrupt,
    DatabaseLocked,
    DatabaseMissing,
    DataError,
    OasisOpsError,
    SchemaError,
    UsageError,
)
from oasis_ops.server import DEMO_DIR_ENV
from oasis_ops.settings import Settings, load_settings
from oasis_ops.trials import Freshness, TrialSource

log = logging.getLogger("oasis_ops.ui")
T = TypeVar("T")

DB_KEY = "db_path"  # session_state key of the chosen trial database (shared by all pages)
DB_WIDGET_KEY = "db_path_input"  # the sidebar text input that sets it
DB_PICK_KEY = "db_path_pick"  # the sidebar's quick picks (the configured database, the demo's replay)
LIVE_DEMO_LABEL = "Live demo run"
CONFIGURED_LABEL = "Configured database"
REPLAY_LABEL = "Replayed incident 2025-11-20"

# Bounded caches: the dashboard must not cause the memory pressure it reports.
QUERY_TTL_S = 60
QUERY_MAX_ENTRIES = 64
SOURCE_MAX_ENTRIES = 8
SOURCE_TTL_S = 3600


# --- the shell -------------------------------------------------------------------------------
# Set by app.py just before it runs the page, consumed by the page: "the shell ran this run".
_this_run = threading.local()
SEEN_KEY = "_oasis_seen"  # the session has run before
GOTO_KEY = "_oasis_goto"  # the page app.py should switch to after a detour
PAGE_TITLE = "oasis-ops"


def shell_frame(settings: Settings) -> None:
    """What every page shows around itself: the sidebar's data source, the demo banner."""
    with st.sidebar:
        st.caption("**oasis-ops** · operations console for Ollama-backed evaluation runs")
        database_picker(settings)
    demo_banner()


def mark_shell() -> None:
    """app.py: the frame is drawn; the page about to run must not draw it again."""
    _this_run.shell = True
    st.session_state[SEEN_KEY] = True


def follow_goto() -> None:
    """app.py, after st.navigation: finish a page_setup() detour."""
    target = st.session_state.pop(GOTO_KEY, None)
    if target:
        st.switch_page(target)


def page_setup(page_path: str) -> Settings:
    """First call of every page: settings, and the frame if app.py did not draw it.

    Until some session has run app.py (and so st.navigation), Streamlit treats pages/ as an
    old-style pages directory and runs a page requested by URL on its own, without the shell
    (AppTest does so on every run after the first). On a session's first run, detour through
    app.py, which switches back to this page; on later runs (a detour then would drop the
    widget change that caused the run) draw the frame here so the page works all the same.
    """
    settings = app_settings()
    guard_host(settings)
    first_run = SEEN_KEY not in st.session_state
    st.session_state[SEEN_KEY] = True
    if getattr(_this_run, "shell", False):
        _this_run.shell = False
        return settings
    if first_run:
        st.session_state[GOTO_KEY] = page_path
        st.switch_page("app.py")
    st.set_page_config(page_title=PAGE_TITLE, layout="wide")
    shell_frame(settings)
    return settings


def access_ok(settings: Settings) -> bool:
    """Whether this session may see the pages: its Host header passes (DNS rebinding) and, with
    an access secret, it has signed in (pages/_access.py)."""
    from pages import _access

    return _access.host_ok(settings) and _access.signed_in(settings)


def refuse_access(settings: Settings) -> None:
    """The refusal (a foreign Host) or the sign-in form; stops the page either way."""
    from pages import _access

    if not _access.host_ok(settings):
        _access.refuse_host(settings)
    _access.sign_in_form(settings)


def guard_host(settings: Settings) -> None:
    if not access_ok(settings):
        refuse_access(settings)


# --- settings and the data source -------------------------------------------------------------
def app_settings() -> Settings:
    """Settings from the environment `oasis-ops dashboard` set up; a bad one stops the page."""
    try:
        return load_settings()
    except ConfigError as exc:
        show_error(exc)
        st.stop()
        raise  # unreachable: st.stop() raises; keeps type checkers happy


def settings_key(settings: Settings) -> str:
    return json.dumps(settings.as_dict(), sort_keys=True, default=str)


@dataclass
class SourceHandle:
    """One TrialSource per (path, settings) per process, shared by every tab (it is thread-safe)."""

    path: str
    key: str
    source: TrialSource


def _release(handle: SourceHandle) -> None:
    handle.source.close()  # drops its snapshot connection when the cache lets go of it


@st.cache_resource(max_entries=SOURCE_MAX_ENTRIES, ttl=SOURCE_TTL_S, on_release=_release, show_spinner=False)
def _source_handle(path: str, key: str, _settings: Settings) -> SourceHandle:
    return SourceHandle(path, key, TrialSource(path, _settings))


def source_handle(path: str, settings: Settings) -> SourceHandle:
    resolved = str(Path(path).expanduser().resolve())
    return _source_handle(resolved, settings_key(settings), settings)


def call(handle: SourceHandle, fn: Callable[[TrialSource], T]) -> T:
    return fn(handle.source)


def refresh(handle: SourceHandle) -> Freshness:
    return handle.source.refresh()


def data_version(fresh: Freshness) -> str:
    """Changes whenever the data behind the source changes: part of every query cache key."""
    return f"{fresh.source_mtime}|{fresh.trials}|{fresh.newest_trial_at}"


@st.cache_data(ttl=QUERY_TTL_S, max_entries=QUERY_MAX_ENTRIES, show_spinner=False)
def cached_runs(_handle: SourceHandle, key: str, version: str) -> pd.DataFrame:
    return call(_handle, lambda s: s.runs())


@st.cache_data(ttl=QUERY_TTL_S, max_entries=QUERY_MAX_ENTRIES, show_spinner=False)
def cached_models(_handle: SourceHandle, key: str, version: str) -> list[str]:
    return list(call(_handle, lambda s: s.models()))


@st.cache_data(ttl=QUERY_TTL_S, max_entries=QUERY_MAX_ENTRIES, show_spinner=False)
def cached_rollup(
    _handle: SourceHandle, key: str, version: str, start: datetime, end: datetime, bucket: str, run_id: str | None, model: str | None
) -> pd.DataFrame:
    return call(_handle, lambda s: s.rollup(start, end, bucket=bucket, run_id=run_id, model=model))


@st.cache_data(ttl=QUERY_TTL_S, max_entries=QUERY_MAX_ENTRIES, show_spinner=False)
def cached_summary(
    _handle: SourceHandle, key: str, version: str, start: datetime, end: datetime, run_id: str | None, model: str | None
) -> dict[str, Any]:
    return dict(call(_handle, lambda s: s.summary(start, end, run_id=run_id, model=model)))


def quick_picks(settings: Settings) -> dict[str, str]:
    """Label -> path of the databases one click away: the configured one (the live run, in the
    demo) and, when the demo offers it (OASIS_OPS_DEMO_REPLAY_DB), the replayed incident."""
    picks: dict[str, str] = {}
    configured = str(settings.db or "").strip()
    if configured:
        picks[LIVE_DEMO_LABEL if os.environ.get(DEMO_DIR_ENV) else CONFIGURED_LABEL] = configured
    replay = os.environ.get(REPLAY_DB_ENV, "").strip()
    if replay and replay not in picks.values():
        picks[REPLAY_LABEL] = replay
    return picks


def _db_typed() -> None:
    st.session_state[DB_KEY] = str(st.session_state.get(DB_WIDGET_KEY) or "").strip()


def _db_picked(picks: dict[str, str]) -> None:
    label = st.session_state.get(DB_PICK_KEY)
    if label in picks:  # None: the selected pill was clicked again; keep the database
        st.session_state[DB_KEY] = picks[label]


def database_picker(settings: Settings) -> str:
    """The sidebar's trial-database path (default: the configured one); shared by all pages.

    The choice lives in a plain session key, DB_KEY (widget state is dropped when a page switch
    recreates the widget), so it survives moving between pages. The widgets only show it: their
    callbacks write it, and each run sets their state from it before drawing them.
    """
    st.subheader("Data source")
    chosen = current_db(settings)
    picks = quick_picks(settings)
    if picks:
        st.session_state[DB_PICK_KEY] = next((label for label, path in picks.items() if path == chosen), None)
        st.pills(
            "Quick pick",
            list(picks),
            key=DB_PICK_KEY,
            on_change=_db_picked,
            args=(picks,),
            help="\n\n".join(f"**{label}**: `{path}`" for label, path in picks.items()),
        )
    st.session_state[DB_WIDGET_KEY] = chosen
    st.text_input(
        "Trial database",
        key=DB_WIDGET_KEY,
        on_change=_db_typed,
        placeholder="path/to/trials.duckdb",
        help="The runner's DuckDB file (any path). The console reads lock-free snapshots of it, so the runner never waits on us.",
    )
    return chosen


def current_db(settings: Settings) -> str:
    return str(st.session_state.get(DB_KEY, settings.db) or "").strip()


def demo_banner() -> None:
    demo_dir = os.environ.get(DEMO_DIR_ENV, "")
    if demo_dir:
        st.info(
            f"**This is a demo**: a live run of a simulated harness against the Ollama emulator, plus the "
            f"replayed incident of 2025-11-20 (files in `{demo_dir}`; switch between them in the sidebar). "
            "To watch a real run: `oasis-ops dashboard --db path/to/trials.duckdb`, with `OLLAMA_HOST` "
            "pointing at its Ollama server.",
            icon=":material/science:",
        )


def no_database_message() -> None:
    st.info(
        "**No trial database chosen.** Enter the path of the runner's DuckDB file in the sidebar, "
        "or start the console with `oasis-ops dashboard --db path/to/trials.duckdb`. "
        "To look around first, `oasis-ops demo` runs a live demo and the replayed incident.",
        icon=":material/database:",
    )


# --- errors -----------------------------------------------------------------------------------
# (error class, headline, what to do); the first matching class wins.
ERROR_HELP: list[tuple[type[BaseException], str, str]] = [
    (
        DatabaseMissing,
        "Trial database not found",
        "Check the path in the sidebar. A run that has not started yet has no file: it appears with the first trial.",
    ),
    (
        DatabaseLocked,
        "The trial database is locked",
        "Another process holds a lock that even a copy cannot get past. Wait a few seconds and refresh.",
    ),
    (
        DatabaseCorrupt,
        "Not a readable DuckDB database",
        "Point the console at the runner's DuckDB file (written by DuckDB 2.x). "
        "If the runner is checkpointing right now, refreshing retries the copy.",
    ),
    (
        SchemaError,
        "Not a trial table",
        "The file opened, but has no table and columns the console understands. Map your table in "
        "`oasis-ops.toml` (`table`, `time_column`, `latency_column`, `status_column`, ...): see the README.",
    ),
    (ConfigError, "Settings problem", "Fix the setting named above in `oasis-ops.toml` or its `OASIS_OPS_*` variable, then restart."),
    (UsageError, "Invalid input", "Correct the value above."),
    (DataError, "The data cannot be read", "Check the file and refresh."),
    (OasisOpsError, "Something went wrong", "Refresh; if it persists, the server log has details."),
]


def explain(exc: BaseException) -> tuple[str, str, str]:
    """(headline, the error's own one-line message, what to do)."""
    for cls, headline, todo in ERROR_HELP:
        if isinstance(exc, cls):
            message = exc.message if isinstance(exc, OasisOpsError) else str(exc)
            hint = getattr(exc, "hint", None)
            return headline, message + (f" ({hint})" if hint else ""), todo
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return (
        "Unexpected error",
        f"{type(exc).__name__}: {first_line}",
        "This is a bug in oasis-ops. The details are in the dashboard's server log.",
    )


def show_error(exc: BaseException) -> None:
    headline, message, todo = explain(exc)
    if not isinstance(exc, OasisOpsError):
        log.error("unexpected error in a page", exc_info=exc)
    st.error(f"**{headline}.** {message}\n\n{todo}", icon=":material/error:")


@contextmanager
def page_errors() -> Iterator[None]:
    """Show any error raised inside as a short message instead of a traceback."""
    try:
        yield
    except Exception as exc:  # Streamlit's stop/rerun are BaseException: they pass through
        show_error(exc)


# --- formatting (units on every number) -------------------------------------------------------
def fmt_count(n: float | int | None) -> str:
    return "–" if n is None or _isnan(n) else f"{int(n):,}"


def fmt_compact(n: float | None) -> str:
    """A count short enough for a narrow metric tile: '950', '9,999', '22.2k', '1.3M'."""
    if n is None or _isnan(n):
        return "–"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.1f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:,.0f}"


def fmt_rate(rate: float | None) -> str:
    """0.0293 -> '2.93%'; more decimals for small rates so 0.05% does not read as 0%."""
    if rate is None or _isnan(rate):
        return "–"
    pct = rate * 100
    if pct == 0 or pct >= 10:
        return f"{pct:.1f}%"
    if pct >= 0.1:
        return f"{pct:.2f}%"
    return f"{pct:.3f}%"


def fmt_ms(ms: float | None) -> str:
    """Latency for people: '850 ms', '4.12 s', '60.0 s', '248 s'."""
    if ms is None or _isnan(ms):
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


def fmt_age(seconds: float | None) -> str:
    """'3 s', '4 min', '2 h 10 min', '3 d 4 h'."""
    if seconds is None or _isnan(seconds):
        return "unknown"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def fmt_utc(ts: datetime | pd.Timestamp | None, *, with_date: bool = True) -> str:
    if ts is None or pd.isna(ts):
        return "–"
    value = pd.Timestamp(ts)
    value = value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")


def age_s(ts: datetime | pd.Timestamp | None, now: datetime | None = None) -> float | None:
    if ts is None or pd.isna(ts):
        return None
    value = pd.Timestamp(ts)
    value = value.tz_localize("UTC") if value.tzinfo is None else value
    return ((now or datetime.now(UTC)) - value.to_pydatetime()).total_seconds()


def _isnan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def freshness_line(fresh: Freshness) -> str:
    """Markdown: where the data comes from and how fresh it is."""
    state = ":green-badge[:material/radio_button_checked: Live]" if fresh.live else ":gray-badge[:material/flag: Finished]"
    newest = fresh.newest_trial_at
    parts = [
        state,
        f"source `{fresh.source_path}`",
        f"snapshot {fmt_age(age_s(fresh.snapshot_taken_at))} old",
        f"newest trial {fmt_utc(newest)} ({fmt_age(age_s(newest))} ago)" if newest is not None else "no trials yet",
    ]
    line = " · ".join(parts)
    if fresh.note:
        line += f"  \n:orange[{fresh.note}]"
    return line
