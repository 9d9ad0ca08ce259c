"""Honest words (issue 11, item 6): a declined confirmation is audited `cancelled` (never
`refused`), runner control reads as words, the demo's banner aims a second shell at the
emulator, and memory numbers say whether they are real, recorded or simulated."""

from __future__ import annotations

import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers_probes import closed_port
from streamlit.testing.v1 import AppTest

from oasis_ops import cli
from oasis_ops.actions import EXIT_CODES, OUTCOMES
from oasis_ops.commands import actions as actions_cmd
from oasis_ops.control import concurrency_wording, parse_state, pause_wording
from oasis_ops.demo import world
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar, heartbeat_row

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


# --- cancelled is its own outcome -------------------------------------------------------------------
def _ctx(tmp_path: Path) -> Any:
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    return SimpleNamespace(sidecar=sidecar, requested_by="cli")


@pytest.mark.parametrize(("answer", "said"), [("n", "answered 'n'"), ("", "no answer"), (EOFError, "no answer")])
def test_answering_no_at_the_cli_prompt_is_cancelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: Any, said: str) -> None:
    ctx = _ctx(tmp_path)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)

    def fake_input(prompt: str) -> str:
        assert prompt == "hard_kill gemma4:e4b? [y/N] "
        if answer is EOFError:
            raise EOFError
        return str(answer)

    monkeypatch.setattr("builtins.input", fake_input)
    result = actions_cmd._confirm(ctx, "hard_kill", "gemma4:e4b", ["SIGKILL pid 1"], {"pid": 1})
    assert result is not None and result.outcome == "cancelled" and result.exit_code == 1
    assert result.message == f"{said} at the y/N prompt: nothing was done"
    rows = ctx.sidecar.actions_since(NOW - timedelta(days=3650))
    assert list(rows["outcome"]) == ["cancelled"] and list(rows["requested_by"]) == ["cli"]


def test_yes_goes_ahead_and_no_terminal_is_still_a_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert actions_cmd._confirm(ctx, "recover", "m", [], {}) is None
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    refused = actions_cmd._confirm(ctx, "recover", "m", [], {})
    assert refused is not None and refused.outcome == "refused" and "--yes" in refused.message
    assert "cancelled" in OUTCOMES and EXIT_CODES["cancelled"] == 1


# --- runner control in words ------------------------------------------------------------------------
def test_pause_and_concurrency_read_as_words() -> None:
    assert pause_wording(True, True) == "paused"
    assert pause_wording(False, False) == pause_wording(None, False) == "running"
    assert pause_wording(True, False) == "pause requested, not yet applied"
    assert pause_wording(False, True) == "resume requested, not yet applied (still paused)"
    assert pause_wording(None, None) == "no runner state yet"
    assert pause_wording(True, True, alive=False) == "paused (last known)"
    assert concurrency_wording(4, 4) == concurrency_wording(None, 4) == "max concurrency 4"
    assert concurrency_wording(2, 4) == "max concurrency 2 requested, not yet applied (runner at 4)"
    state = parse_state({"pid": os.getpid(), "applied_version": 3, "max_concurrency": 2, "paused": False,
                         "in_flight": 1, "completed": 1234, "heartbeat_at": NOW.isoformat()}, NOW)  # fmt: skip
    text = state.describe()
    assert "max concurrency 2, running; 1 in flight, 1,234 completed" in text
    assert "paused=" not in text and "max_concurrency=" not in text


def test_the_recovery_page_line_says_paused_or_running(monkeypatch: pytest.MonkeyPatch) -> None:
    from pages._actions import runner_state_line

    fresh = {"pid": os.getpid(), "applied_version": 2, "max_concurrency": 4, "in_flight": 0, "heartbeat_at": NOW.isoformat()}
    asked = {"max_concurrency": 4, "paused": True}
    pending = runner_state_line(parse_state({**fresh, "paused": False}, NOW), asked)
    assert "**pause requested, not yet applied**" in pending
    assert "applied False" not in pending and "–" not in pending
    assert "**paused**" in runner_state_line(parse_state({**fresh, "paused": True}, NOW), asked)
    assert "**running**" in runner_state_line(parse_state({**fresh, "paused": False}, NOW), {"max_concurrency": 4, "paused": False})
    assert "max concurrency: requested **4**, applied **4**" in pending
    nobody = runner_state_line(None, asked)
    assert nobody.startswith("requested: max concurrency 4, paused") and "no runner has acknowledged" in nobody


# --- the demo: a second shell aims at the emulator ----------------------------------------------------
def test_the_demo_banner_exports_the_emulator_url(tmp_path: Path) -> None:
    port = closed_port()
    settings = world.world_settings(load_settings(env={}), tmp_path, port)
    lines = world.banner_lines("http://127.0.0.1:8501", settings, tmp_path / "replay" / "trials.duckdb", tmp_path / "st.log")
    assert f"    export OLLAMA_HOST=http://127.0.0.1:{port}" in lines
    text = "\n".join(lines)
    assert "host memory: REAL (this machine's)" in text and "host memory: RECORDED (the write-up's Mac" in text


# --- real, recorded, simulated next to the numbers ----------------------------------------------------
def _host_row(ts: datetime, source: str, free_pages: int, page: int = 4096) -> dict[str, Any]:
    return {"ts": ts, "mem_total_bytes": 16_000_000_000, "mem_free_bytes": free_pages * page,
            "mem_available_bytes": 8_000_000_000, "page_size": page, "pages_free": free_pages, "pages_speculative": 0,
            "swap_total_bytes": 0, "swap_used_bytes": 0, "pageins": 0, "pageouts": 0, "swapins": 0, "swapouts": 0,
            "pressure": 3.0, "source": source}  # fmt: skip


def test_the_demo_page_labels_each_memory_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oasis_ops.server import DEMO_DIR_ENV

    replay_dir = tmp_path / "replay"
    assert cli.main(["demo", "replay", "--out", str(replay_dir)]) == 0
    live = tmp_path / "trials.duckdb"
    assert cli.main(["demo", "replay", "--out", str(tmp_path / "live-src")]) == 0
    (tmp_path / "live-src" / "trials.duckdb").rename(live)  # any trial DB will do for the live run
    now = datetime.now(UTC)
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.write_batch({"host_samples": [_host_row(now, "linux:/proc", 500_000)],
                         "sampler_status": [heartbeat_row(started_at=now, last_tick_at=now, ticks=1, errors=0, now=now)]})  # fmt: skip
    monkeypatch.setenv(DEMO_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(world.REPLAY_DB_ENV, str(replay_dir / "trials.duckdb"))
    monkeypatch.setenv("OASIS_OPS_DB", str(live))
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")  # no emulator: its panel says so
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    at.switch_page("pages/demo.py").run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [m.label for m in at.metric]
    assert "Free memory at its lowest (RECORDED)" in labels and "Memory pressure at its worst (RECORDED)" in labels
    assert "Free memory (REAL)" in labels and "Available (REAL)" in labels
    captions = " ".join(c.value for c in at.caption)
    assert "run oasis-20251120: 2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)" in captions
    assert "reconstructed by `oasis-ops demo replay`" in captions and "not this machine's" in captions
    assert f"sampled on this machine ({socket.gethostname()}, linux:/proc)" in captions
    lowest = next(m for m in at.metric if m.label == "Free memory at its lowest (RECORDED)")
    assert lowest.value.endswith("of 55.3 GB"), lowest.value


def test_reports_say_the_replays_memory_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OASIS_OPS_LOG_UTC_OFFSET", raising=False)
    assert cli.main(["demo", "replay", "--out", str(tmp_path)]) == 0
    out = tmp_path / "pm.md"
    assert cli.main(["report", "--db", str(tmp_path / "trials.duckdb"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    memory = text[text.index("## Memory, in vm_stat's terms"):]
    assert memory.splitlines()[2].startswith("These samples are **RECORDED**: the write-up's host memory as reconstructed")
    assert "Host memory below: **RECORDED**" in text  # next to the memory_pressure evidence
    assert "not this machine's" in text.split("## Impact")[0]  # said in the summary too
