"""Bad input: a clear one-line OasisOpsError naming the problem, never a raw DuckDB error."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from helpers_trials import T0, Row, create_canonical, trial_settings, writer_holding

from oasis_ops.errors import DatabaseCorrupt, DatabaseMissing, SchemaError
from oasis_ops.trials import TrialSource


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing) as info:
        TrialSource(tmp_path / "nope.duckdb", trial_settings())
    assert "nope.duckdb" in _one_line(info.value)


def test_random_bytes_are_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(DatabaseCorrupt) as info:
        TrialSource(junk, trial_settings())
    message = _one_line(info.value)
    assert str(junk) in message and "snap-" not in message  # names the user's file, not our copy
    assert not list((tmp_path / "snapshots").rglob("snap-*"))  # failed copies are cleaned up


def test_database_without_the_table_lists_tables(tmp_path: Path) -> None:
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE experiments (x INT)")
    con.execute("CREATE TABLE results (y INT)")
    con.close()
    with pytest.raises(SchemaError) as info:
        TrialSource(db, trial_settings())
    message = _one_line(info.value)
    assert "'trials'" in message and "experiments, results" in message


def test_table_without_status_column_lists_columns(tmp_path: Path) -> None:
    db = tmp_path / "nostatus.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE trials (started_at TIMESTAMP, latency_ms DOUBLE, outcome_text VARCHAR)")
    con.close()
    with pytest.raises(SchemaError) as info:
        TrialSource(db, trial_settings())
    message = _one_line(info.value)
    assert "status column 'status'" in message and "status_column" in message
    assert "started_at, latency_ms, outcome_text" in message


def test_time_column_of_wrong_type_and_no_latency(tmp_path: Path) -> None:
    db = tmp_path / "types.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE trials (started_at VARCHAR, latency_ms DOUBLE, status VARCHAR)")
    con.execute("CREATE TABLE t2 (started_at TIMESTAMP, status VARCHAR)")
    con.close()
    with pytest.raises(SchemaError, match="started_at.*VARCHAR"):
        TrialSource(db, trial_settings())
    with pytest.raises(SchemaError, match="neither a latency column"):
        TrialSource(db, trial_settings(table="t2"))


def test_canonical_names_are_detected_case_insensitively(tmp_path: Path) -> None:
    db = tmp_path / "caps.duckdb"
    con = duckdb.connect(str(db))
    con.execute('CREATE TABLE Trials ("Started_At" TIMESTAMP, "Duration_ms" DOUBLE, "Status" VARCHAR)')
    con.execute("INSERT INTO Trials VALUES ('2025-11-20 17:40:10', 4000, 'ok'), ('2025-11-20 17:40:20', NULL, 'error')")
    con.close()
    with TrialSource(db, trial_settings()) as src:
        m = src.mapping
        assert (m.table, m.time_column, m.latency_column, m.status_column) == ("Trials", "Started_At", "Duration_ms", "Status")
        frame = src.rollup(T0, T0.replace(minute=41))
        assert frame[["trials", "ok", "errors"]].iloc[0].tolist() == [2, 1, 1] and frame["p50_ms"].iloc[0] == 4000.0


def test_empty_table(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    create_canonical(db)
    with TrialSource(db, trial_settings()) as src:
        assert src.runs().empty and src.models() == [] and src.time_bounds() is None
        assert src.freshness().newest_trial_at is None
        assert src.summary(T0, T0.replace(hour=18))["failure_rate"] is None
        assert src.rollup(T0, T0.replace(minute=42))["trials"].tolist() == [0, 0]


def _writer_holds_the_lock(db: Path) -> bool:
    try:
        duckdb.connect(str(db), read_only=True).close()
    except duckdb.Error as exc:
        return "lock" in str(exc).lower()
    return False


@pytest.mark.slow
def test_file_held_read_write_by_another_process_is_still_read(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    create_canonical(db, [Row(T0, 4000.0, "ok")])
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM trials")  # the writer script numbers trials from 1
    con.close()
    with writer_holding(db, tmp_path) as result:
        assert _writer_holds_the_lock(db), "the writer never held the lock; the test would prove nothing"
        with TrialSource(db, trial_settings()) as src:
            fresh = src.freshness()
            assert fresh.trials > 0 and fresh.note == ""
            assert src.runs()["run_id"].tolist() == ["run-live"]
        assert _writer_holds_the_lock(db), "the writer let go of the file before we were done reading"
    assert '"failures": []' in result.read_text()


def test_torn_copies_keep_the_last_good_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "torn.duckdb"
    create_canonical(db, [Row(T0, 4000.0, "ok")])
    src = TrialSource(db, trial_settings())
    try:
        good = src.freshness()
        # the file is replaced by garbage (what a copy caught mid-rewrite looks like to DuckDB)
        db.write_bytes(os.urandom(256 * 1024))
        fresh = src.refresh()
        assert "torn" in fresh.note and "last good" in fresh.note
        assert fresh.trials == good.trials == 1
        assert src.rollup(T0, T0.replace(minute=41))["trials"].tolist() == [1]
    finally:
        src.close()
    assert not list((tmp_path / "snapshots").rglob("snap-*"))  # close removes our copies
