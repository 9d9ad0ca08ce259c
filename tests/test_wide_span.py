"""A trial table whose start times span 1970..2999 (a clock bug, a bad import) through every
command: each answers within its bound or refuses with exit 2 and one line; none grows without
bound (before: `timeline --bucket 1m` reached 22 GB RSS, `incidents`/`report` 1.5 GB in 6 s).

Memory is checked as the children's peak RSS (getrusage), not time: every command runs as the
user runs it, in its own process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_trials import Row, create_canonical

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS_BOUND_MB = 900  # far below what an unbounded answer takes (GBs), far above a normal one


@pytest.fixture(scope="module")
def wide_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("wide") / "trials.duckdb"
    first, last = datetime(1970, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, tzinfo=UTC)
    step = (last - first) / 999
    rows = [Row(first + step * i, 4000.0 + i, "timeout" if i % 7 == 0 else "ok") for i in range(1000)]
    rows += [Row(datetime(2025, 11, 20, 17, 0, tzinfo=UTC) + timedelta(seconds=i), 4100.0, "ok") for i in range(50)]
    create_canonical(db, rows)
    return db


def _run(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "OASIS_OPS_SNAPSHOT_DIR": str(tmp_path / "snap"), **(extra_env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "oasis_ops", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux


def test_an_explicit_bucket_that_does_not_fit_is_refused_with_one_line(wide_db: Path, tmp_path: Path) -> None:
    done = _run(["timeline", "--db", str(wide_db), "--bucket", "1m", "--format", "csv"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "more than max_buckets (200,000)" in lines[0] and "use a bucket of" in lines[0], lines
    assert done.stdout == ""
    assert _peak_rss_mb() < PEAK_RSS_BOUND_MB


def test_an_automatic_bucket_gets_coarser_and_answers(wide_db: Path, tmp_path: Path) -> None:
    done = _run(["timeline", "--db", str(wide_db), "--from", "1970-01-01", "--to", "3000-01-01", "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert 100 < len(rows) <= 1500  # auto_bucket: at most 1,500 buckets
    assert sum(r["trials"] for r in rows) == 1050
    assert _peak_rss_mb() < PEAK_RSS_BOUND_MB


@pytest.mark.parametrize("command", [["incidents", "--json"], ["report", "--out", "REPORT"], ["warnings", "--json"]])
def test_incidents_and_report_scan_only_the_minutes_with_trials(wide_db: Path, tmp_path: Path, command: list[str]) -> None:
    """1,050 trials (in 1,001 minutes) over 1,030 years: too wide to grid every minute (541M rows), so the scan reads
    the minutes that hold trials (cost follows the rows) and answers."""
    args = [a.replace("REPORT", str(tmp_path / "r.md")) for a in command]
    done = _run([args[0], "--db", str(wide_db), *args[1:]], tmp_path)
    assert done.returncode in (0, 3), (done.stdout[-1000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    if args[0] in ("incidents", "warnings"):
        assert isinstance(json.loads(done.stdout), list)
    else:
        assert "1970" in (tmp_path / "r.md").read_text()
    assert _peak_rss_mb() < PEAK_RSS_BOUND_MB
    # past max_buckets minutes WITH trials, refused with one line until --from/--to narrow it
    small = _run([args[0], "--db", str(wide_db), *args[1:]], tmp_path, {"OASIS_OPS_MAX_BUCKETS": "500"})
    assert small.returncode == 2, (small.stdout[-1000:], small.stderr[-2000:])
    lines = small.stderr.strip().splitlines()
    assert len(lines) == 1 and "has trials in 1,001 1m buckets, more than max_buckets (500)" in lines[0], lines
    narrow = _run([args[0], "--db", str(wide_db), *args[1:], "--from", "2025-11-20T16:00Z", "--to", "2025-11-20T18:00Z"],
                  tmp_path, {"OASIS_OPS_MAX_BUCKETS": "500"})  # fmt: skip
    assert narrow.returncode in (0, 3), narrow.stderr[-2000:]


def test_nan_infinite_and_negative_latencies_are_not_latencies(tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    t0 = datetime(2025, 11, 20, 17, 0, tzinfo=UTC)
    rows = [Row(t0 + timedelta(seconds=i), 4000.0 + i, "ok") for i in range(40)]
    create_canonical(db, rows)
    con = duckdb.connect(str(db))  # the invalid ones as a buggy harness writes them (finished_at = started_at)
    for i, bad in enumerate([float("nan"), float("inf"), float("-inf"), -5.0, 1e308]):
        at = (t0 + timedelta(seconds=50 + i)).replace(tzinfo=None)
        con.execute("INSERT INTO trials VALUES (?, 'run-1', 'gemma4:e4b', ?, ?, ?, 'ok', NULL)", [100 + i, at, at, bad])
    con.close()
    done = _run(["timeline", "--db", str(db), "--format", "json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (bucket,) = json.loads(done.stdout)
    assert bucket["trials"] == 45 and bucket["max_ms"] == 4039.0  # 1e308 ms (3e297 years) is no latency either
    assert "inf" not in done.stdout.lower() and "nan" not in done.stdout.lower()
    report = tmp_path / "r.md"
    done = _run(["report", "--db", str(db), "--out", str(report)], tmp_path)
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "5 trials with an invalid latency" in report.read_text()


def test_the_timeline_page_answers_auto_and_refuses_1m_with_one_line(wide_db: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OASIS_OPS_DB", str(wide_db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(tmp_path / "snap-ui"))
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.switch_page("pages/timeline.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error  # auto: a coarse bucket, answered
    next(s for s in at.selectbox if s.label == "Bucket").set_value("1m").run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "more than max_buckets" in at.error[0].value


@pytest.mark.parametrize("page", ["pages/live.py", "pages/diagnostics.py"])
def test_the_live_and_diagnostics_pages_answer_on_the_wide_table(wide_db: Path, tmp_path: Path, page: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The Live page shows the 30 minutes before the newest trial; Diagnostics scans the run's
    minutes with trials (sparse): both answer, no exception, no error box."""
    import socket

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("OASIS_OPS_DB", str(wide_db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    monkeypatch.setenv("OASIS_OPS_SNAPSHOT_DIR", str(tmp_path / "snap-ui"))
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed}")  # nobody answers
    monkeypatch.setenv("OASIS_OPS_SERVER_LOG", "/nonexistent/server.log")
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title and at.title[0].value in ("Live", "Diagnostics")
