"""Rollups against an independent computation (plain Python + numpy linear percentiles)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_trials import (
    T0,
    Row,
    assert_rollup_equal,
    create_canonical,
    independent_rollup,
    insert_canonical,
    read_rows,
    trial_settings,
)

from oasis_ops.settings import load_settings
from oasis_ops.trials import TrialSource
from oasis_ops.trials.generate import generate_trials

CANONICAL_QUERY = "SELECT started_at, latency_ms, status, run_id, model FROM trials"


def _day(path: Path) -> tuple[datetime, datetime]:
    """Two runs with a gap, a failure window, rare errors, plus a minute of failures only."""
    generate_trials(path, n_trials=1500, start=T0, minutes=60, seed=3, error_rate=0.01,
                    failure_windows=[(T0 + timedelta(minutes=18), T0 + timedelta(minutes=24))])
    # a 10-minute gap (empty minutes), then a second run on another model
    generate_trials(path, n_trials=600, start=T0 + timedelta(minutes=70), minutes=30, seed=4,
                    run_id="run-2", model="qwen3:8b")
    con = duckdb.connect(str(path))
    try:
        # a minute inside the gap holding only failures, all without a latency
        failures_only = T0 + timedelta(minutes=64)
        insert_canonical(con, [
            Row(failures_only + timedelta(seconds=5), None, "timeout", "run-1"),
            Row(failures_only + timedelta(seconds=25), None, "error", "run-1"),
            Row(failures_only + timedelta(seconds=59.999), None, "timeout", "run-1"),
        ], first_id=10_000)
    finally:
        con.close()
    return T0, T0 + timedelta(minutes=100)


def test_rollup_matches_independent_computation(tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    start, end = _day(db)
    rows = read_rows(db, CANONICAL_QUERY)
    assert any(r.latency_ms is None and r.status == "timeout" for r in rows)
    assert any(r.latency_ms == 60000.0 and r.status == "timeout" for r in rows)
    with TrialSource(db, trial_settings()) as src:
        frame = src.rollup(start, end)
        expected = independent_rollup(rows, start, end)
        assert_rollup_equal(frame, expected)
        assert list(frame.columns) == ["minute", "trials", "ok", "timeouts", "errors", "failure_rate",
                                       "p50_ms", "p95_ms", "p99_ms", "max_ms"]
        assert str(frame["minute"].dt.tz) == "UTC"
        # the cases the data must contain for this test to mean anything
        empty = frame[frame["trials"] == 0]
        assert len(empty) >= 5 and empty["failure_rate"].isna().all() and empty["p95_ms"].isna().all()
        only_failures = frame[(frame["trials"] > 0) & (frame["ok"] == 0)]
        assert (only_failures["failure_rate"] == 1.0).all() and only_failures["p50_ms"].isna().any()
        window = frame[(frame["minute"] >= T0 + timedelta(minutes=19)) & (frame["minute"] < T0 + timedelta(minutes=23))]
        assert (window["failure_rate"] > 0.8).all()

        # filters and wider buckets
        assert_rollup_equal(src.rollup(start, end, run_id="run-2"), independent_rollup(rows, start, end, run_id="run-2"))
        assert_rollup_equal(src.rollup(start, end, model="gemma4:e4b"), independent_rollup(rows, start, end, model="gemma4:e4b"))
        assert_rollup_equal(src.rollup(start, end, "5m"), independent_rollup(rows, start, end, timedelta(minutes=5)))
        # an unaligned range covers the buckets that touch it
        assert_rollup_equal(src.rollup(start + timedelta(seconds=30), start + timedelta(minutes=3, seconds=1)),
                            independent_rollup(rows, start, start + timedelta(minutes=4)))

        total = src.summary(start, end)
        latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
        failures = sum(r.status != "ok" for r in rows)
        assert total["trials"] == len(rows) and total["failures"] == failures
        assert math.isclose(total["failure_rate"], failures / len(rows))
        import numpy as np
        for q in (50, 95, 99):
            assert math.isclose(total[f"p{q}_ms"], float(np.percentile(latencies, q)), rel_tol=1e-9)

        runs = src.runs()
        assert list(runs["run_id"]) == ["run-2", "run-1"]  # newest first
        assert list(runs["models"]) == ["qwen3:8b", "gemma4:e4b"]
        assert runs["trials"].sum() == len(rows)
        assert src.models() == ["gemma4:e4b", "qwen3:8b"]
        bounds = src.time_bounds(run_id="run-2")
        run2 = [r.started_at for r in rows if r.run_id == "run-2"]
        assert bounds == (min(run2), max(run2))
        assert src.time_bounds(model="nope") is None
        ok_late = sum(r.status == "ok" and r.started_at >= T0 + timedelta(minutes=80) for r in rows)
        assert src.completed_since(T0 + timedelta(minutes=80)) == ok_late
        assert src.freshness().newest_trial_at == max(r.started_at for r in rows)


def test_timezone_aware_column_with_non_utc_offsets(tmp_path: Path) -> None:
    db = tmp_path / "tz.duckdb"
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'Asia/Kolkata'")  # the writer's zone must not matter
    con.execute("CREATE TABLE trials (started_at TIMESTAMPTZ, latency_ms DOUBLE, status VARCHAR)")
    con.execute("""
        INSERT INTO trials VALUES
        ('2025-11-20 23:10:05+05:30', 4000, 'ok'),      -- 17:40:05 UTC
        ('2025-11-20 09:40:30-08:00', 5000, 'ok'),      -- 17:40:30 UTC
        ('2025-11-20 17:40:59.5+00', NULL, 'timeout'),  -- 17:40:59.5 UTC
        ('2025-11-20 23:12:00+05:30', 6000, 'ok'),      -- 17:42:00 UTC
        ('2025-11-21 00:00:00+05:30', 7000, 'error')    -- 18:30:00 UTC
    """)
    con.close()
    rows = read_rows(db, "SELECT started_at, latency_ms, status, NULL, NULL FROM trials")
    assert rows[0].started_at == datetime(2025, 11, 20, 17, 40, 5, tzinfo=UTC)
    with TrialSource(db, trial_settings()) as src:
        assert src.mapping.time_is_tz and src.mapping.run_id_column is None
        start, end = T0, T0 + timedelta(minutes=60)
        frame = src.rollup(start, end)
        assert_rollup_equal(frame, independent_rollup(rows, start, end))
        assert list(frame["trials"][:3]) == [3, 0, 1]
        # hour buckets align to UTC hours, not to the writer's +05:30
        hourly = src.rollup(datetime(2025, 11, 20, 17, tzinfo=UTC), datetime(2025, 11, 20, 19, tzinfo=UTC), "1h")
        assert list(hourly["trials"]) == [4, 1]
        assert src.runs()["run_id"].tolist() == [None]


def test_non_canonical_table_mapped_by_config(tmp_path: Path) -> None:
    db = tmp_path / "harness.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE results (experiment VARCHAR, llm VARCHAR, t_start TIMESTAMP, t_end TIMESTAMP, outcome_code VARCHAR)")
    con.execute("CREATE TABLE unrelated (x INT)")
    values = []
    for i in range(400):
        started = datetime(2025, 11, 20, 17, 40) + timedelta(seconds=7 * i)
        code = ["PASS", "PASS", "PASS", "TIMEOUT", "FAIL", "CRASH"][i % 6] if i % 5 == 0 else "PASS"
        finished = None if code in ("FAIL", "CRASH") else started + timedelta(milliseconds=3000 + (i * 37) % 4000)
        values.append(("exp-a" if i < 300 else "exp-b", "llama" if i % 2 else "gemma", started, finished, code))
    con.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?)", values)
    con.close()
    cfg = tmp_path / "oasis-ops.toml"
    cfg.write_text(
        'table = "results"\ntime_column = "t_start"\nfinished_column = "t_end"\n'
        'status_column = "outcome_code"\nrun_id_column = "experiment"\nmodel_column = "llm"\n'
        'ok_words = ["PASS"]\ntimeout_words = ["TIMEOUT"]\nerror_words = ["FAIL"]\n'
    )
    settings = load_settings(cfg).replace(snapshot_min_interval_s=0.0)
    rows = read_rows(db, "SELECT t_start, epoch_ms(t_end) - epoch_ms(t_start), outcome_code, experiment, llm FROM results")
    assert any(r.latency_ms is None for r in rows) and any(r.status == "CRASH" for r in rows)
    words = {"ok_words": ["PASS"], "timeout_words": ["TIMEOUT"]}
    with TrialSource(db, settings) as src:
        assert src.mapping.latency_column is None and src.mapping.finished_column == "t_end"
        start, end = T0, T0 + timedelta(minutes=50)
        frame = src.rollup(start, end)
        assert_rollup_equal(frame, independent_rollup(rows, start, end, **words))
        assert frame["errors"].sum() == sum(r.status in ("FAIL", "CRASH") for r in rows)  # CRASH: unknown word = error
        assert_rollup_equal(src.rollup(start, end, run_id="exp-b", model="llama"),
                            independent_rollup(rows, start, end, run_id="exp-b", model="llama", **words))
        assert src.runs()["run_id"].tolist() == ["exp-b", "exp-a"]
        assert src.models() == ["gemma", "llama"]


def test_incremental_refresh_equals_from_scratch(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    generate_trials(db, n_trials=1200, start=T0, minutes=40, seed=5, error_rate=0.02)
    start, end = T0, T0 + timedelta(minutes=50)
    with TrialSource(db, trial_settings()) as src:
        src.rollup(start, end)
        src.rollup(start, end, "5m", run_id="run-1")
        misses = src.cache_stats["misses"]
        # the runner appends: new minutes, and late rows landing in old minutes
        con = duckdb.connect(str(db))
        insert_canonical(con, [
            Row(T0 + timedelta(minutes=3, seconds=10), 61000.0, "timeout"),   # late row, old minute
            Row(T0 + timedelta(minutes=12, seconds=1), None, "error"),        # late failure, old minute
            Row(T0 + timedelta(minutes=41, seconds=30), 4500.0, "ok"),        # a new minute
            Row(T0 + timedelta(minutes=44), 9000.0, "ok", run_id="run-9"),  # another run
        ], first_id=5000)
        con.close()
        fresh = src.refresh()
        assert fresh.trials == 1204
        stats = src.cache_stats
        assert stats["bucket_recomputes"] >= 4, stats
        incremental = src.rollup(start, end)
        incremental_5m = src.rollup(start, end, "5m", run_id="run-1")
        assert src.cache_stats["misses"] == misses  # served from the updated cache, no rescan
        rows = read_rows(db, CANONICAL_QUERY)
        assert_rollup_equal(incremental, independent_rollup(rows, start, end))
        assert_rollup_equal(incremental_5m, independent_rollup(rows, start, end, timedelta(minutes=5), run_id="run-1"))
        assert incremental["max_ms"].max() == 61000.0
        assert src.runs()["run_id"].tolist() == ["run-9", "run-1"]

        # a rewrite (rows deleted) is not an append: the cache is dropped and rebuilt exactly
        con = duckdb.connect(str(db))
        con.execute("DELETE FROM trials WHERE started_at < ?", [datetime(2025, 11, 20, 17, 45)])
        con.close()
        src.refresh()
        rows = read_rows(db, CANONICAL_QUERY)
        assert_rollup_equal(src.rollup(start, end), independent_rollup(rows, start, end))
        assert src.freshness().trials == len(rows)
    with TrialSource(db, trial_settings()) as scratch:
        assert_rollup_equal(scratch.rollup(start, end), independent_rollup(rows, start, end))


def test_refresh_skips_copy_when_source_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "still.duckdb"
    create_canonical(db, [Row(T0, 4000.0, "ok")])
    with TrialSource(db, trial_settings()) as src:
        first = src.freshness()
        again = src.refresh()
        assert again.copy_ms == first.copy_ms and again.snapshot_taken_at >= first.snapshot_taken_at
        assert again.note == "" and again.trials == 1 and again.stale_s < 5
        empty = src.rollup(T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=3))
        assert list(empty["trials"]) == [0, 0, 0] and empty["failure_rate"].isna().all()


@pytest.mark.parametrize(
    ("start", "end", "bucket"),
    [(0, 1, "1m"), (0, 25, "1m"), (0, 26, "2m"), (0, 24 * 7, "10m"), (0, 24 * 365, "6h"), (0, 24 * 365 * 30, "8d")],
)
def test_auto_bucket_keeps_charts_small(start: int, end: int, bucket: str) -> None:
    from oasis_ops.trials import auto_bucket

    assert auto_bucket(T0 + timedelta(hours=start), T0 + timedelta(hours=end)) == bucket


def test_parse_duration_and_time() -> None:
    from oasis_ops.errors import UsageError
    from oasis_ops.trials import parse_duration, parse_time

    assert parse_duration("6h") == timedelta(hours=6) and parse_duration("1m") == timedelta(minutes=1)
    assert parse_duration("90") == timedelta(seconds=90) and parse_duration("250ms") == timedelta(milliseconds=250)
    now = datetime(2025, 11, 20, 18, tzinfo=UTC)
    assert parse_time("2025-11-20T17:40:00Z") == datetime(2025, 11, 20, 17, 40, tzinfo=UTC)
    assert parse_time("2025-11-20 17:40") == datetime(2025, 11, 20, 17, 40, tzinfo=UTC)  # naive = UTC
    assert parse_time("2025-11-20T19:40:00+02:00") == datetime(2025, 11, 20, 17, 40, tzinfo=UTC)
    assert parse_time("6h", now=now) == now - timedelta(hours=6)
    for bad in ("6x", "", "-1h", "0s"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_time("yesterday-ish")


def test_summary_percentiles_are_exact_across_bins(tmp_path: Path) -> None:
    """The bounded-memory percentile path (histogram + values of one bin) equals numpy's linear."""
    import random

    import numpy as np

    rng = random.Random(7)
    latencies: list[float | None] = [round(rng.lognormvariate(8.3, 0.25), 3) for _ in range(997)]
    latencies += [60000.0] * 40 + [None] * 13 + [0.5, 0.25, 1.75]  # duplicates, sub-ms, NULLs
    rows = [Row(T0 + timedelta(milliseconds=37 * i), lat, "ok" if lat and lat < 60000 else "timeout") for i, lat in enumerate(latencies)]
    db = tmp_path / "pct.duckdb"
    create_canonical(db, rows)
    present = [lat for lat in latencies if lat is not None]
    with TrialSource(db, trial_settings()) as src:
        for hi in (3, 50, len(rows)):
            end = rows[hi - 1].started_at + timedelta(microseconds=1)
            subset = [r.latency_ms for r in rows[:hi] if r.latency_ms is not None]
            got = src.summary(T0, end)
            for q in (50, 95, 99):
                assert math.isclose(got[f"p{q}_ms"], float(np.percentile(subset, q)), rel_tol=1e-12), (hi, q)
        assert src.summary(T0, T0 + timedelta(days=1))["max_ms"] == max(present)
