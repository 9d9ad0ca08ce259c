"""One number per fact (issue 11, item 4): a run's start, end and duration come from one function
(TrialSource.run_span) with one display rule, and every surface shows the same text for the
replay: the run picker, the timeline CLI header, incidents, the Timeline summary, and both
report formats. Machine output gives latencies to 0.01 ms."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import streamlit as st
from helpers_trials import trial_settings
from streamlit.testing.v1 import AppTest

from oasis_ops import cli
from oasis_ops.diagnosis.render import render_html, render_markdown
from oasis_ops.diagnosis.report import build_report
from oasis_ops.trials import TrialSource
from oasis_ops.trials.span import RunSpan, duration_text, range_text

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
T = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)
# The replay (oasis-ops demo replay): first trial starts 09:00:01.784, the last one starts
# 18:03:59.876 and times out at 18:04:59.893.
REPLAY_SPAN = "2025-11-20 09:00:01 → 18:04:59 UTC (9 h 4 min 58 s)"


# --- the definition and the display rule ------------------------------------------------------------
def _table(path: Path, rows: list[tuple[object, ...]], *, finished: bool = True, latency: bool = True) -> None:
    cols = ["trial_id BIGINT", "run_id VARCHAR", "started_at TIMESTAMP", "status VARCHAR"]
    cols += ["finished_at TIMESTAMP"] if finished else []
    cols += ["latency_ms DOUBLE"] if latency else []
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE trials ({', '.join(cols)})")
    con.executemany(f"INSERT INTO trials VALUES ({', '.join('?' for _ in cols)})", rows)
    con.close()


def _naive(ts: datetime) -> datetime:
    return ts.replace(tzinfo=None)


def test_end_is_the_last_finish_else_start_plus_latency_else_start(tmp_path: Path) -> None:
    a, b = T + timedelta(seconds=1, microseconds=700_000), T + timedelta(minutes=9, seconds=30)
    # finished_at present: the run ends when its last trial finished (here not the last to start)
    rows = [
        (1, "r", _naive(a), "ok", _naive(a + timedelta(minutes=20, seconds=5)), 1_205_000.0),
        (2, "r", _naive(b), "timeout", None, None),  # no finish, no latency: ends when it started
    ]
    _table(tmp_path / "f.duckdb", rows)
    with TrialSource(tmp_path / "f.duckdb", trial_settings()) as src:
        span = src.run_span("r")
        assert span is not None
        assert (span.start, span.last_started) == (a, b)
        assert span.end == a + timedelta(minutes=20, seconds=5) and span.duration == span.end - span.start
        assert span.trials == 2 and span.failures == 1
        runs = src.runs()
        assert runs.loc[0, "ended_at"].to_pydatetime() == span.end
        assert runs.loc[0, "duration_s"] == pytest.approx(span.duration.total_seconds())
        assert src.time_bounds("r") == (a, b)  # rollup ranges still count trials by start
    # no finished_at column: started_at + latency
    _table(tmp_path / "l.duckdb", [(1, "r", _naive(a), "ok", 2500.0), (2, "r", _naive(b), "timeout", None)], finished=False)
    with TrialSource(tmp_path / "l.duckdb", trial_settings()) as src:
        span = src.run_span("r")
        assert span is not None and span.end == b  # the timeout with no latency started last
    _table(tmp_path / "l2.duckdb", [(1, "r", _naive(b), "ok", 61_000.0), (2, "r", _naive(a), "ok", 10.0)], finished=False)
    with TrialSource(tmp_path / "l2.duckdb", trial_settings()) as src:
        span = src.run_span("r")
        assert span is not None and span.end == b + timedelta(seconds=61)


def test_the_live_refresh_keeps_the_end_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    _table(path, [(1, "r", _naive(T), "ok", _naive(T + timedelta(seconds=4)), 4000.0)])
    with TrialSource(path, trial_settings()) as src:
        assert src.run_span("r").end == T + timedelta(seconds=4)  # type: ignore[union-attr]
        con = duckdb.connect(str(path))
        con.execute("INSERT INTO trials VALUES (2, 'r', ?, 'ok', ?, 9000.0)", [_naive(T + timedelta(seconds=30)), _naive(T + timedelta(seconds=39))])
        con.close()
        src.refresh()
        assert src.run_span("r").end == T + timedelta(seconds=39)  # type: ignore[union-attr]


def test_one_display_rule_truncates_to_the_second_and_the_duration_agrees() -> None:
    start = datetime(2025, 11, 20, 9, 0, 1, 999_999, tzinfo=UTC)
    end = datetime(2025, 11, 20, 18, 4, 59, 1, tzinfo=UTC)
    span = RunSpan("r", start, end, end, 1, 0)
    assert span.text() == REPLAY_SPAN  # not 18:05, not "9 h 5 min": the shown times, subtracted
    assert span.shown_duration_s == 9 * 3600 + 4 * 60 + 58
    assert (span.start_text, span.end_text, span.duration_text) == ("2025-11-20 09:00:01", "18:04:59", "9 h 4 min 58 s")
    assert range_text(start, start + timedelta(days=1, seconds=5)) == "2025-11-20 09:00:01 → 2025-11-21 09:00:06 UTC (1 d 0 h 0 min 5 s)"
    assert [duration_text(s) for s in (0, 59.9, 60, 3599, 3600)] == ["0 s", "59 s", "1 min 0 s", "59 min 59 s", "1 h 0 min 0 s"]
    assert span.as_dict()["duration_s"] == round((end - start).total_seconds(), 3)


# --- the replay, on every surface ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    assert cli.main(["demo", "replay", "--out", str(out)]) == 0
    return out / "trials.duckdb"


def test_the_replay_span_is_the_same_on_every_surface(
    replay_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OASIS_OPS_LOG_UTC_OFFSET", raising=False)
    settings = trial_settings(snapshot_dir=str(tmp_path / "snap"))
    with TrialSource(replay_db, settings) as src:
        span = src.run_span(src.latest_run())
    assert span is not None and span.text() == REPLAY_SPAN
    label = span.label()

    # the timeline CLI header
    assert cli.main(["timeline", "--db", str(replay_db)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert label in header and "18:03 UTC" not in header and ".. 2025-11-20 18:04" not in header

    # incidents
    assert cli.main(["incidents", "--db", str(replay_db)]) == 0
    assert label in capsys.readouterr().out.splitlines()[0]

    # both report formats, from the same blocks: the run's totals and the whole-run row
    pm = build_report(replay_db, settings)
    markdown, html = render_markdown(pm), render_html(pm)
    assert f"over {REPLAY_SPAN}." in markdown and f"over {REPLAY_SPAN}." in html
    assert "| whole run | 2025-11-20 09:00:01–18:04:59 |" in markdown
    assert "<td>whole run</td><td>2025-11-20 09:00:01–18:04:59</td>" in html
    for text in (markdown, html):
        assert "9 h 5 min" not in text and "9 h 3 min" not in text and "18:05:14" not in text
    out = tmp_path / "pm.md"
    assert cli.main(["report", "--db", str(replay_db), "--out", str(out)]) == 0
    assert f"over {REPLAY_SPAN}." in out.read_text(encoding="utf-8")

    # the Timeline page: the run picker's line, the summary, and its HTML report download
    monkeypatch.setenv("OASIS_OPS_DB", str(replay_db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(tmp_path / "snap-ui"))
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    at.switch_page("pages/timeline.py").run()
    assert not at.exception, [e.value for e in at.exception]
    picker = next(s for s in at.selectbox if s.label == "Run")
    assert picker.options[0] == f"oasis-20251120 · 2025-11-20 09:00:01 → 18:04:59 UTC · 9 h 4 min 58 s · {span.trials:,} trials"
    captions = " ".join(c.value for c in at.caption)
    assert f"run `oasis-20251120`: {REPLAY_SPAN}" in captions, captions
    # the chart reaches past the last trial (the eviction at 18:04:13 and the Stopping after it),
    # and says so as the chart's reach, not as the run's end
    assert "the chart runs on past the run's end" in captions
    from pages._report import report_html

    page_html = report_html(str(replay_db), settings, None, None, span.run_id, None).decode()
    assert f"over {REPLAY_SPAN}." in page_html


def test_machine_output_gives_latencies_to_a_hundredth_of_a_ms(replay_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["timeline", "--db", str(replay_db), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert cli.main(["timeline", "--db", str(replay_db), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    for record in records:
        for key in keys:
            value = record[key]
            assert value is None or value == round(value, 2), (record["minute"], key, value)
    for row in rows:
        for key in keys:
            assert re.fullmatch(r"(\d+(\.\d{1,2})?)?", row[key]), (row["minute"], key, row[key])
    minute = next(r for r in records if r["minute"] == "2025-11-20T17:56:00Z")
    assert minute["p95_ms"] == 47417.06  # was 47417.064999999995
    assert next(r for r in rows if r["minute"] == "2025-11-20T17:56:00Z")["p95_ms"] == "47417.06"

    assert cli.main(["incidents", "--db", str(replay_db), "--json"]) == 0
    text = capsys.readouterr().out
    for key, value in re.findall(r'"(\w*ms\w*)": (-?\d+\.\d+)', text):
        assert len(value.split(".")[1]) <= 2, (key, value)
