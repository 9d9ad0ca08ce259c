"""Pins for the trial queries that the watchdog, the model-state judgement and the incident
windows lean on, at their edges (written from the mutation run's survivors): the sparse rollup
(non-empty buckets only, filters, the bucket limit's message), trials completed since a moment
and trials that ENDED ok since one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers_trials import T0, Row, create_canonical, trial_settings

from oasis_ops.errors import TooManyBuckets, UsageError
from oasis_ops.trials import TrialSource


def _rows() -> list[Row]:
    return [
        Row(T0, 1000.0, "ok"),  # exactly at the start: in
        Row(T0 + timedelta(seconds=30), 2000.0, "timeout"),
        Row(T0 + timedelta(minutes=1, seconds=5), 3000.0, "ok", model="qwen3:8b"),
        Row(T0 + timedelta(minutes=1, seconds=10), 4000.0, "error", run_id="run-2"),
        Row(T0 + timedelta(minutes=7), 5000.0, "ok"),  # after an empty stretch
        Row(T0 + timedelta(minutes=10), 6000.0, "ok"),  # exactly at the end: out
    ]


def _source(tmp_path: Path, name: str = "trials.duckdb", rows: list[Row] | None = None, **settings: object) -> TrialSource:
    db = tmp_path / name
    create_canonical(db, _rows() if rows is None else rows)
    return TrialSource(db, trial_settings(**settings))


def test_the_sparse_rollup_has_only_the_buckets_with_trials(tmp_path: Path) -> None:
    with _source(tmp_path) as src:
        frame = src.rollup_sparse(T0, T0 + timedelta(minutes=10))
        minutes = [m.to_pydatetime() for m in frame["minute"]]
        assert minutes == [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=7)]
        assert frame["trials"].tolist() == [2, 2, 1]
        assert (frame["ok"].tolist(), frame["timeouts"].tolist(), frame["errors"].tolist()) == ([1, 1, 1], [1, 0, 0], [0, 1, 0])
        # the same numbers as the gap-filled rollup's non-empty rows
        full = src.rollup(T0, T0 + timedelta(minutes=10))
        assert len(full) == 10
        nonempty = full[full["trials"] > 0].reset_index(drop=True)
        assert nonempty["trials"].tolist() == frame["trials"].tolist()
        assert nonempty["p50_ms"].tolist() == frame["p50_ms"].tolist()
        # filters
        assert src.rollup_sparse(T0, T0 + timedelta(minutes=10), run_id="run-2")["trials"].tolist() == [1]
        by_model = src.rollup_sparse(T0, T0 + timedelta(minutes=10), model="qwen3:8b")
        assert [m.to_pydatetime() for m in by_model["minute"]] == [T0 + timedelta(minutes=1)]
        # a wider bucket: the range is floored and ceiled to it
        five = src.rollup_sparse(T0 + timedelta(minutes=1), T0 + timedelta(minutes=9), bucket="5m")
        assert [m.to_pydatetime() for m in five["minute"]] == [T0, T0 + timedelta(minutes=5)]
        assert five["trials"].tolist() == [4, 1]
        # an empty or inverted range has no rows and no query
        assert len(src.rollup_sparse(T0, T0)) == 0
        assert len(src.rollup_sparse(T0 + timedelta(minutes=5), T0)) == 0


def test_the_sparse_rollup_counts_only_buckets_with_trials_against_the_limit(tmp_path: Path) -> None:
    # 11 minutes with a trial each, spread over 60: the empty ones do not count
    rows = [Row(T0 + timedelta(minutes=5 * i), 1000.0, "ok") for i in range(11)]
    with _source(tmp_path, "eleven.duckdb", rows, max_buckets=11) as src:
        assert len(src.rollup_sparse(T0, T0 + timedelta(hours=1))) == 11  # at the limit: fine
    with _source(tmp_path, "ten.duckdb", rows, max_buckets=10) as src:
        with pytest.raises(TooManyBuckets) as refused:
            src.rollup_sparse(T0, T0 + timedelta(hours=1))
    assert str(refused.value) == ("2025-11-20 17:40 → 2025-11-20 18:40 UTC has trials in 11 1m buckets, "
                                  "more than max_buckets (10) (narrow the range with --from/--to)")  # fmt: skip
    assert isinstance(refused.value, UsageError) and refused.value.hint == "narrow the range with --from/--to"


def test_completed_since_counts_ok_trials_started_at_or_after_the_moment(tmp_path: Path) -> None:
    with _source(tmp_path) as src:
        assert src.completed_since(T0) == 4  # ok ones: at T0, 1m05s (qwen3), 7m, 10m
        assert src.completed_since(T0 + timedelta(minutes=1, seconds=5)) == 3  # the moment itself counts
        assert src.completed_since(T0 + timedelta(minutes=1, seconds=6)) == 2
        assert src.completed_since(T0, run_id="run-2") == 0  # its one trial was an error
        assert src.completed_since(T0, model="qwen3:8b") == 1
        assert src.completed_since(T0, run_id="run-1", model="gemma4:e4b") == 3
        assert src.completed_since(T0 + timedelta(hours=1)) == 0


def test_ended_ok_since_counts_by_the_end_of_the_trial_whenever_it_started(tmp_path: Path) -> None:
    with _source(tmp_path) as src:
        # 7m + 5 s ends at 7m05s: ended after 7m02s though it started before it
        assert src.ended_ok_since(T0 + timedelta(minutes=7, seconds=2), None) == 2
        assert src.ended_ok_since(T0 + timedelta(minutes=7, seconds=5), None) == 2  # the end itself counts
        assert src.ended_ok_since(T0 + timedelta(minutes=7, seconds=6), None) == 1
        assert src.ended_ok_since(T0 + timedelta(minutes=1, seconds=8), "qwen3:8b") == 1  # ended at 1m08s
        assert src.ended_ok_since(T0 + timedelta(minutes=1, seconds=8, milliseconds=1), "qwen3:8b") == 0
        assert src.ended_ok_since(T0, "gemma4:e4b") == 3  # the error and the timeout never count
    # trials that started over an hour (ENDED_LOOKBACK) before the moment are not looked for
    long_ones = [Row(T0, 2 * 3_600_000.0, "ok"), Row(T0 + timedelta(minutes=45), 50 * 60_000.0, "ok")]
    with _source(tmp_path, "long.duckdb", long_ones) as src:
        assert src.ended_ok_since(T0 + timedelta(minutes=90), None) == 1  # the one that started at 45m
        assert src.ended_ok_since(T0 + timedelta(minutes=59), None) == 2


def test_a_table_without_a_model_column_ignores_the_model_asked_for(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "trials.duckdb"
    create_canonical(db, _rows())
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE trials DROP COLUMN model")
    con.close()
    with TrialSource(db, trial_settings()) as src:
        assert src.completed_since(T0, model="no-such-model") == 4
        assert src.ended_ok_since(T0, "no-such-model") == 4


def test_generated_trials_have_the_documented_shape(tmp_path: Path) -> None:
    import duckdb

    from oasis_ops.trials.generate import generate_trials

    db = tmp_path / "gen.duckdb"
    window = (T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))
    assert generate_trials(db, n_trials=0, start=T0, minutes=60) == 0 and not db.exists()
    one = tmp_path / "one.duckdb"
    assert generate_trials(one, n_trials=1, start=T0, minutes=1) == 1 and one.exists()
    assert generate_trials(db, n_trials=6000, start=T0, minutes=60, seed=5, failure_windows=[window], error_rate=0.01) == 6000
    assert generate_trials(db, n_trials=10, start=T0 + timedelta(hours=2), minutes=1, run_id="run-2", model="qwen3:8b") == 10
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = [r[0] for r in con.execute("DESCRIBE trials").fetchall()]
        assert cols == ["trial_id", "run_id", "model", "started_at", "finished_at", "latency_ms", "status", "error"]
        first = con.execute("""SELECT min(trial_id), max(trial_id), count(*), any_value(run_id), any_value(model),
                                      min(started_at), max(started_at) FROM trials WHERE run_id = 'run-1'""").fetchone()
        assert first is not None and first[:5] == (1, 6000, 6000, "run-1", "gemma4:e4b")
        assert first[5] >= T0.replace(tzinfo=None) and first[6] < (T0 + timedelta(minutes=60)).replace(tzinfo=None)
        second = con.execute("""SELECT min(trial_id), max(trial_id), any_value(model), count(*) FILTER (WHERE status <> 'ok')
                                 FROM trials WHERE run_id = 'run-2'""").fetchone()
        assert second == (6001, 6010, "qwen3:8b", 0)  # appended after the first run; the default error rate is rare
        inside = con.execute("""SELECT avg((status = 'timeout')::INT), count(*) FILTER (WHERE latency_ms IS NOT NULL AND latency_ms <> 60000)
                                FROM trials WHERE started_at >= ? AND started_at < ?""",
                             [window[0].replace(tzinfo=None), window[1].replace(tzinfo=None)]).fetchone()  # fmt: skip
        assert inside is not None and 0.95 < inside[0] < 1.0 and inside[1] > 0  # ~98% timeouts, the rest slow but ok
        healthy = con.execute("""SELECT median(latency_ms), quantile_cont(latency_ms, 0.95), avg((status = 'error')::INT),
                                        count(*) FILTER (WHERE status = 'error' AND latency_ms IS NOT NULL),
                                        count(*) FILTER (WHERE finished_at <> started_at + to_microseconds(CAST(1000 * coalesce(latency_ms, 150) AS BIGINT))),
                                        any_value(error) FILTER (WHERE status = 'error')
                                 FROM trials WHERE run_id = 'run-1' AND NOT (started_at >= ? AND started_at < ?)""",
                              [window[0].replace(tzinfo=None), window[1].replace(tzinfo=None)]).fetchone()  # fmt: skip
        assert healthy is not None
        assert 4000 < healthy[0] < 4200 and 5800 < healthy[1] < 6400  # p50 ~4.1 s, p95 ~6.1 s
        assert 0.005 < healthy[2] < 0.02 and healthy[3] == 0  # errors at the rate asked, without a latency
        assert healthy[4] == 0 and healthy[5] == "litellm.APIConnectionError: connection reset by peer"
        timeout_error = con.execute("SELECT any_value(error) FROM trials WHERE status = 'timeout'").fetchone()
        assert timeout_error == ("timed out after 1m0s (litellm.Timeout)",)
    finally:
        con.close()
    # renamed and dropped columns, time zone aware
    shaped = tmp_path / "shaped.duckdb"
    generate_trials(shaped, n_trials=5, start=T0, minutes=1, tz_aware=True, table="runs",
                    columns={"started_at": "t0", "latency_ms": None})  # fmt: skip
    con = duckdb.connect(str(shaped), read_only=True)
    try:
        types = {r[0]: r[1] for r in con.execute("DESCRIBE runs").fetchall()}
        assert "latency_ms" not in types and types["t0"] == "TIMESTAMP WITH TIME ZONE"
        assert list(types) == ["trial_id", "run_id", "model", "t0", "finished_at", "status", "error"]  # the rest kept, in order
        assert types["finished_at"] == "TIMESTAMP WITH TIME ZONE"
    finally:
        con.close()


def _same_rollups(live: TrialSource, db: Path, start: object, end: object) -> None:
    """The long-lived source's rollups (cached, folded) equal a fresh source's, per filter."""
    with TrialSource(db, trial_settings()) as fresh:
        for kwargs in ({}, {"run_id": "run-2"}, {"model": "qwen3:8b"}, {"bucket": "5m"}):
            mine, theirs = live.rollup(start, end, **kwargs), fresh.rollup(start, end, **kwargs)  # type: ignore[arg-type]
            assert mine.equals(theirs), (kwargs, mine[mine["trials"] > 0], theirs[theirs["trials"] > 0])


def test_appended_rows_fold_into_the_cached_rollups_and_a_rewrite_rebuilds_them(tmp_path: Path) -> None:
    import duckdb
    from helpers_trials import insert_canonical

    db = tmp_path / "trials.duckdb"
    create_canonical(db, _rows())
    start, end = T0, T0 + timedelta(minutes=20)
    cached = ({"model": "no-such-model"}, {}, {"run_id": "run-2"}, {"model": "qwen3:8b"}, {"bucket": "5m"})
    with TrialSource(db, trial_settings()) as live:
        for kwargs in cached:
            live.rollup(start, end, **kwargs)  # type: ignore[arg-type]  # cached, in this order
        con = duckdb.connect(str(db))
        insert_canonical(con, [
            Row(T0 + timedelta(seconds=40), 1500.0, "ok"),  # {}: 0, 5m: 0
            Row(T0 + timedelta(minutes=12), 2500.0, "timeout"),  # {}: 12, 5m: 10
            Row(T0 + timedelta(minutes=12, seconds=30), 3500.0, "ok", run_id="run-2"),  # {}: 12, run-2: 12, 5m: 10
            Row(T0 + timedelta(minutes=15), 4500.0, "ok", model="qwen3:8b"),  # {}: 15, model: 15, 5m: 15
            Row(T0 + timedelta(minutes=15, seconds=10), 4600.0, "ok"),  # {}: 15, 5m: 15 (not the model's)
            Row(T0, 900.0, "ok", run_id="run-2", model="qwen3:8b"),  # exactly at the start: every entry's 0
            Row(T0 - timedelta(minutes=5), 900.0, "ok", run_id="run-2", model="qwen3:8b"),  # before every range
            Row(T0 + timedelta(minutes=30), 900.0, "ok", run_id="run-2", model="qwen3:8b"),  # after
        ], first_id=100)  # fmt: skip
        con.close()
        before = live.cache_stats.get("bucket_recomputes", 0)
        live.refresh()
        # exactly the cached buckets the new rows fall in: {} 0, 12, 15; run-2 0, 12; model 0, 15; 5m 0, 10, 15
        assert live.cache_stats["bucket_recomputes"] - before == 10
        _same_rollups(live, db, start, end)
        assert live.rollup(start, end)["trials"].sum() == 12
        with TrialSource(db, trial_settings()) as fresh:
            assert live.trial_counts() == fresh.trial_counts() == (14, 0)  # the groups: the new rows once
            assert [s.as_dict() for s in live.run_spans()] == [s.as_dict() for s in fresh.run_spans()]
        # rewritten (a row deleted, one added): not an append, everything is rebuilt
        con = duckdb.connect(str(db))
        con.execute("DELETE FROM trials WHERE trial_id = 1")
        insert_canonical(con, [Row(T0 + timedelta(minutes=3), 800.0, "error")], first_id=200)
        con.close()
        live.refresh()
        _same_rollups(live, db, start, end)
        assert live.rollup(start, end)["trials"].sum() == 12 and live.summary(start, end)["errors"] == 2
        assert live.trial_counts() == (14, 0)


def test_groups_merge_per_run_and_model_keeping_nulls_out_of_the_extremes() -> None:
    from oasis_ops.trials.groups import Group, Groups

    old = Groups([("run-1", "m", 100, 500, 900, 10, 9, 1), ("run-2", "m", 50, 60, 70, 2, 2, 0), ("run-3", None, None, None, None, 3, 0, 3)])
    fresh = Groups([("run-1", "m", 400, 800, 850, 5, 4, 0), ("run-3", None, 20, 30, 40, 1, 1, 0), ("run-4", "x", 1, 2, 3, 1, 0, 0)])
    merged = {(g.run_id, g.model): g for g in old.merged(fresh).rows}
    assert merged[("run-1", "m")] == Group("run-1", "m", 100, 800, 900, 15, 13, 1)  # min first, max last and end, sums
    assert merged[("run-2", "m")] == Group("run-2", "m", 50, 60, 70, 2, 2, 0)  # untouched
    assert merged[("run-3", None)] == Group("run-3", None, 20, 30, 40, 4, 1, 3)  # a None is no extreme
    assert merged[("run-4", "x")] == Group("run-4", "x", 1, 2, 3, 1, 0, 0)  # new
    assert old.merged(Groups()) is old
    assert (old.first_us(), old.last_us(), old.trials(), old.untimed(), old.models()) == (50, 500, 15, 4, ["m"])
    rows = Groups.from_columns(old.columns()).rows
    assert rows == old.rows and Groups([(None, float("nan"), float("nan"), 1.0, None, None, None)]).rows == (
        Group(None, None, None, 1, None, 0, 0, 0),)
    assert [g.run_id for g in old.matching(model="m").rows] == ["run-1", "run-2"]
    assert [g.run_id for g in old.matching(run_id="run-3").rows] == ["run-3"]
    assert old.matching() is old and not old.matching(run_id="run-1", model="other").rows


def test_snapshots_are_rate_limited_by_the_last_copy_time_within_bounds(tmp_path: Path) -> None:
    import duckdb

    from oasis_ops.trials.snapshot import Snapshotter

    db = tmp_path / "t.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
    con.close()
    now = [1000.0]

    def grow() -> None:
        c = duckdb.connect(str(db))
        c.execute("INSERT INTO t VALUES (1); CHECKPOINT")
        c.close()

    snaps: Snapshotter[int] = Snapshotter(db, tmp_path / "snaps", open_snapshot=lambda p: duckdb.connect(str(p), read_only=True),
                                          validate=lambda c: int(c.execute("SELECT count(*) FROM t").fetchone()[0]),  # type: ignore[index]
                                          min_interval_s=1.0, max_interval_s=5.0, clock=lambda: now[0])  # fmt: skip
    try:
        assert snaps.refresh() and snaps.current is not None and snaps.current.state == 1
        now[0] += 3.0
        assert not snaps.refresh() and snaps.verified_at == 1003.0  # unchanged: looked at, no copy
        grow()
        now[0] += 0.5  # 3.5 s since the last copy (looking is no attempt): over min_interval_s
        assert snaps.refresh() and snaps.current.state == 2
        grow()
        now[0] += 0.99
        assert not snaps.refresh() and snaps.current.state == 2  # within min_interval_s
        now[0] += 0.01
        assert snaps.refresh() and snaps.current.state == 3  # at it
        snaps.current.copy_ms = 2000.0  # a slow copy: 4x its time, capped at max_interval_s
        grow()
        now[0] += 4.99
        assert not snaps.refresh()
        now[0] += 0.01
        assert snaps.refresh() and snaps.current.state == 4
        snaps.current.copy_ms = 500.0  # 4 x 0.5 s = 2 s
        taken_at = now[0]
        grow()
        now[0] = taken_at + 1.999
        assert not snaps.refresh()
        now[0] = taken_at + 2.0
        assert snaps.refresh() and snaps.current.state == 5
        grow()
        assert snaps.refresh(force=True) and snaps.current.state == 6  # forced: no wait
    finally:
        snaps.close()


def test_an_unreadable_file_is_named_as_the_users_not_as_the_private_copy(tmp_path: Path) -> None:
    from oasis_ops.errors import DataError

    db = tmp_path / "trials.duckdb"
    db.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(DataError) as refused:
        TrialSource(db, trial_settings())
    assert str(refused.value) == (f"{db} is a text file, not a DuckDB database (the trial database must be a DuckDB "
                                  "file (Contract 1 in the README))")  # fmt: skip  # the user's file, said once


def test_parse_time_is_aware_and_a_bare_number_is_no_duration() -> None:
    from datetime import UTC, datetime

    from oasis_ops.trials.timeparse import parse_time

    for text in ("now", "6h", "2025-11-20T17:40:00Z", "2025-11-20T18:40:00+01:00", "2025-11-20 17:40"):
        moment = parse_time(text)
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0), text
    assert parse_time("2025-11-20T17:40:00Z") == parse_time("2025-11-20T18:40:00+01:00") == datetime(2025, 11, 20, 17, 40, tzinfo=UTC)
    for bare in ("12", "1.5", "2025"):  # a number without a unit is neither a duration nor a time
        with pytest.raises(UsageError, match="not a time"):
            parse_time(bare)


def _trial(i: int) -> dict[str, object]:
    from datetime import UTC, datetime

    started = datetime(2025, 11, 20, 17, 40, tzinfo=UTC) + timedelta(seconds=i)
    return {"trial_id": i, "run_id": "r", "model": "m", "started_at": started, "finished_at": started + timedelta(seconds=1),
            "latency_ms": 1000.0, "status": "ok"}  # fmt: skip


def test_the_writer_flushes_a_full_batch_or_when_due_and_never_an_empty_one(tmp_path: Path) -> None:
    from oasis_ops.trials.writer import TrialWriter

    writer = TrialWriter(tmp_path / "w.duckdb", batch_size=3, flush_interval_s=3600.0, background=False)
    try:
        assert not writer.flush_if_due()  # nothing waiting
        for i in (1, 2):
            writer.write(_trial(i))
        assert not writer.flush_if_due() and writer.pending == 2  # not due, batch not full
        writer.flush_interval_s = 0.0
        assert writer.flush_if_due() and writer.pending == 0 and writer.written == 2  # due
        assert not writer.flush_if_due()  # due, but nothing waiting
        writer.flush_interval_s, writer.batch_size = 3600.0, 100
        for i in (3, 4, 5):
            writer.write(_trial(i))
        assert not writer.flush_if_due()
        writer.batch_size = 3
        assert writer.flush_if_due() and writer.written == 5  # a full batch, not due
        writer.write(_trial(6))
        writer.flush_interval_s = 0.0
        assert writer.flush_if_due() and writer.written == 6  # one row is a flush too
    finally:
        writer.close()


def test_the_writer_keeps_values_fills_extra_columns_and_says_what_failed(tmp_path: Path) -> None:
    import duckdb

    from oasis_ops.errors import DataError
    from oasis_ops.trials.writer import TrialWriter

    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE trials (trial_id BIGINT, latency_ms DOUBLE, status VARCHAR, notes VARCHAR)")
    con.close()
    with TrialWriter(db, background=False) as writer:
        writer.write({**_trial(1), "latency_ms": 1234.5})
        writer.write({**_trial(2), "latency_ms": None, "status": "timeout"})
        writer.write({**_trial(3), "latency_ms": 7})
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT trial_id, latency_ms, status, notes FROM trials ORDER BY trial_id").fetchall() == [
        (1, 1234.5, "ok", None), (2, None, "timeout", None), (3, 7.0, "ok", None)]
    con.close()

    alien = tmp_path / "alien.duckdb"
    con = duckdb.connect(str(alien))
    con.execute("CREATE TABLE trials (a INTEGER, b VARCHAR)")
    con.close()
    writer = TrialWriter(alien, background=False, retry_for_s=0.0)
    writer.write(_trial(1))
    with pytest.raises(DataError) as refused:
        writer.flush()
    assert str(refused.value) == (f"table 'trials' in {alien} has none of the trial columns ('trial_id', 'run_id', 'model', "
                                  "'started_at', 'finished_at', 'latency_ms', 'status', 'error')")  # fmt: skip
    assert not writer.flush_if_due() and writer.pending == 1  # a failed round keeps the rows
    writer._pending.clear()

    typed = tmp_path / "typed.duckdb"
    con = duckdb.connect(str(typed))
    con.execute("CREATE TABLE trials (trial_id BIGINT, status INTEGER)")
    con.close()
    writer = TrialWriter(typed, background=False)
    writer.write(_trial(1))
    with pytest.raises(DataError) as failed:
        writer.flush()
    message = str(failed.value)
    assert message.startswith(f"cannot write trials to {typed}: Conversion Error: ") and "\n" not in message
    assert "ok" in message  # DuckDB's first line, naming the value it could not convert
    writer._pending.clear()


def test_spilled_trials_are_appended_and_kept_in_memory_when_even_that_fails(tmp_path: Path) -> None:
    import json
    import os

    from oasis_ops.errors import DataError
    from oasis_ops.trials.writer import TrialWriter

    db = tmp_path / "s.duckdb"
    writer = TrialWriter(db, background=False, batch_size=100)
    spill = tmp_path / f"s.duckdb.pending-{os.getpid()}.jsonl"
    writer.write(_trial(1))
    writer.write(_trial(2))
    writer._spill()
    writer.write(_trial(3))
    writer._spill()  # appended, not overwritten
    rows = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [r["trial_id"] for r in rows] == [1, 2, 3] and rows[0]["started_at"] == "2025-11-20 17:40:01"
    assert writer.pending == 0
    spill.unlink()
    spill.mkdir()  # the spill file cannot be written either
    writer.write(_trial(4))
    writer.write(_trial(5))
    with pytest.raises(DataError) as refused:
        writer._spill()
    assert str(refused.value) == f"cannot write trials to {db} and cannot save them to {spill}: Is a directory"
    writer.write(_trial(6))
    assert [row["trial_id"] for row in writer._pending] == [4, 5, 6]  # kept, in order
    spill.rmdir()
    writer.close()  # and written in the end
    assert writer.written == 3


def test_the_bounded_percentiles_equal_the_exact_ones_bucket_by_bucket(tmp_path: Path) -> None:
    """The histogram path (for buckets too full for an in-memory quantile) against DuckDB's own
    quantile_cont, on buckets at the edges: one trial, failures only, an empty bucket between,
    two outcomes in one millisecond bin, and equal values."""
    import numpy as np

    rows = [
        Row(T0 + timedelta(seconds=1), 1234.5, "ok"),  # minute 0: one trial
        Row(T0 + timedelta(minutes=1, seconds=1), None, "timeout"),  # minute 1: failures only, no latency
        Row(T0 + timedelta(minutes=1, seconds=2), None, "error"),
        Row(T0 + timedelta(minutes=4, seconds=30), 42.0, "ok", run_id="run-2", model="qwen3:8b"),
        # minute 2: empty
        *[Row(T0 + timedelta(minutes=3, seconds=s), v, st) for s, v, st in (
            (1, 1000.2, "ok"), (2, 1000.7, "timeout"), (3, 999.9, "ok"), (4, 5000.0, "ok"), (5, 5000.0, "ok"),
            (6, 60000.0, "timeout"), (7, 1.0, "error"), (8, 250.25, "ok"))],  # fmt: skip
        *[Row(T0 + timedelta(minutes=4, seconds=s), 700.5 - s / 10, "ok") for s in range(5)],  # one millisecond bin
    ]
    with _source(tmp_path, "edges.duckdb", rows) as src:
        from_us = int(T0.timestamp() * 1_000_000)
        width_us, to_us = 60_000_000, from_us + 5 * 60_000_000
        with src._lock:
            bounded = src._bounded_buckets(from_us, to_us, width_us, None, None)
            exact = src._compute_one(from_us, to_us, width_us, None, None, ())
            for run_id, model in (("run-2", None), (None, "qwen3:8b"), ("run-1", "gemma4:e4b")):  # the filters reach it
                mine = src._bounded_buckets(from_us, to_us, width_us, run_id, model)
                theirs = src._compute_one(from_us, to_us, width_us, run_id, model, ())
                assert mine.index.tolist() == theirs.index.tolist() and mine["trials"].tolist() == theirs["trials"].tolist()
    assert bounded.index.tolist() == exact.index.tolist() == [from_us + i * width_us for i in (0, 1, 3, 4)]
    assert list(bounded.columns) == list(exact.columns)
    assert {c: str(t) for c, t in bounded.dtypes.items()} == {c: str(t) for c, t in exact.dtypes.items()}
    assert bounded.index.name == "bucket_us" and str(bounded.index.dtype) == "int64"
    assert bounded.loc[from_us + 4 * width_us, "p50_ms"] == exact.loc[from_us + 4 * width_us, "p50_ms"] == pytest.approx(700.25)
    for column in bounded.columns:
        assert np.allclose(bounded[column].to_numpy(float), exact[column].to_numpy(float), equal_nan=True, rtol=0, atol=1e-9), column
    assert bounded.loc[from_us, "p50_ms"] == 1234.5 and np.isnan(bounded.loc[from_us + width_us, "p95_ms"])
    assert bounded.loc[from_us + width_us, ["trials", "timeouts", "errors"]].tolist() == [2, 1, 1]


def test_a_column_name_given_equal_to_its_default_still_lets_aliases_find_the_column(tmp_path: Path) -> None:
    import duckdb

    from oasis_ops.settings import load_settings

    db = tmp_path / "aliased.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE trials (start_time TIMESTAMP, duration_ms DOUBLE, outcome VARCHAR)")
    con.execute("INSERT INTO trials VALUES (?, 1500.0, 'ok')", [T0.replace(tzinfo=None)])
    con.close()
    given = load_settings(env={"OASIS_OPS_TIME_COLUMN": "started_at"}).replace(snapshot_min_interval_s=0.0)
    assert given.origins.get("time_column") not in (None, "default")  # given, equal to the default
    with TrialSource(db, given) as src:
        mapping = src.mapping
        assert (mapping.time_column, mapping.latency_column, mapping.status_column) == ("start_time", "duration_ms", "outcome")
        assert src.completed_since(T0) == 1
    other = load_settings(env={"OASIS_OPS_TIME_COLUMN": "begun"}).replace(snapshot_min_interval_s=0.0)
    with pytest.raises(Exception, match="begun"):  # a name that is not the default is taken at its word
        TrialSource(db, other)


def test_records_csv_writes_blanks_for_missing_values_with_plain_newlines() -> None:
    from oasis_ops.trials.records import OUTPUT_COLUMNS, records_csv

    text = records_csv([{c: None for c in OUTPUT_COLUMNS} | {"trials": 3}])
    header, row = text.split("\n")[:2]
    assert header == ",".join(OUTPUT_COLUMNS) and "\r" not in text
    assert row.split(",")[OUTPUT_COLUMNS.index("trials")] == "3" and set(row.split(",")) == {"", "3"}


def test_run_spans_and_counts_follow_their_filters(tmp_path: Path) -> None:
    rows = [*_rows(), Row(T0 + timedelta(minutes=2, microseconds=123_456), 1000.0001, "ok", run_id="run-2", model="qwen3:8b")]
    with _source(tmp_path, rows=rows) as src:
        assert src.trial_counts() == (7, 0)
        assert src.trial_counts(model="qwen3:8b") == (2, 0)
        assert src.trial_counts(run_id="run-2") == (2, 0) and src.trial_counts(run_id="run-2", model="qwen3:8b") == (1, 0)
        span = src.run_span("run-2")
        assert span is not None and span.run_id == "run-2" and span.trials == 2
        assert span.as_dict()["duration_s"] == round((span.end - span.start).total_seconds(), 3)
        assert src.run_span("run-2", model="qwen3:8b").trials == 1  # type: ignore[union-attr]
        assert src.run_span("no-such-run") is None


def test_runs_is_one_row_per_run_newest_first_and_typed_when_empty(tmp_path: Path) -> None:
    import pandas as pd

    with _source(tmp_path) as src:
        runs = src.runs()
        assert list(runs.columns) == ["run_id", "models", "first_at", "last_at", "ended_at", "duration_s", "trials", "failures"]
        assert runs["run_id"].tolist() == ["run-1", "run-2"]  # run-1 has the newest start (10m)
        one = runs.iloc[0]
        assert (one["models"], one["trials"], one["failures"]) == ("gemma4:e4b, qwen3:8b", 5, 1)
        assert one["first_at"] == pd.Timestamp(T0) and one["last_at"] == pd.Timestamp(T0 + timedelta(minutes=10))
        assert one["ended_at"] == pd.Timestamp(T0 + timedelta(minutes=10, seconds=6))
        assert one["duration_s"] == 606.0 and runs.index.tolist() == [0, 1]
    with _source(tmp_path, "empty.duckdb", []) as src:
        empty = src.runs()
        assert len(empty) == 0 and list(empty.columns) == list(runs.columns)
        assert {c: str(t) for c, t in empty.dtypes.items()} == {
            "run_id": "object", "models": "object", "first_at": "datetime64[us, UTC]", "last_at": "datetime64[us, UTC]",
            "ended_at": "datetime64[us, UTC]", "duration_s": "float64", "trials": "int64", "failures": "int64"}  # fmt: skip


def test_the_writer_defaults_and_its_background_flusher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    from datetime import timezone

    import duckdb

    from oasis_ops.trials.writer import TrialWriter

    monkeypatch.setenv("TZ", "Asia/Kolkata")  # a machine not on UTC: stored times are still UTC
    time.tzset()
    try:
        writer = TrialWriter(tmp_path / "d.duckdb")
        try:
            assert (writer.table, writer.batch_size, writer.flush_interval_s, writer.retry_for_s) == ("trials", 50, 2.0, 30.0)
            assert (writer.memory_limit, writer.threads, writer.lock_retries, writer.written) == ("128MB", 1, 0, 0)
            thread = writer._thread
            assert thread is not None and thread.is_alive() and thread.daemon and thread.name == "oasis-trial-writer"
            writer.flush_interval_s = 0.2
            ist = timezone(timedelta(hours=5, minutes=30))
            writer.write({**_trial(1), "started_at": T0.astimezone(ist), "finished_at": T0.astimezone(ist) + timedelta(seconds=1)})
            deadline = time.monotonic() + 10
            while writer.written == 0 and time.monotonic() < deadline:  # the flusher's own round, no flush() here
                time.sleep(0.05)
            assert writer.written == 1 and writer.pending == 0
        finally:
            writer.close()
        assert not writer._thread.is_alive()  # type: ignore[union-attr]
    finally:
        monkeypatch.undo()  # the zone as it was, for the rest of the session
        time.tzset()
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    assert con.execute("SELECT started_at FROM trials").fetchone() == (T0.replace(tzinfo=None),)
    con.close()


def test_rollup_records_are_the_rollups_values_on_either_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oasis_ops.trials import queries
    from oasis_ops.trials.rollup import machine_records

    with _source(tmp_path) as src:
        end = T0 + timedelta(minutes=12)
        cases = [((), {}), (("5m",), {}), (("1m", "run-2"), {}), (("1m", None, "qwen3:8b"), {})]
        direct = [src.rollup_records(T0, end, *args) for args, _ in cases]
        assert direct[0] == machine_records(src.rollup(T0, end)) and len(direct[0]) == 12
        assert direct[0][0]["minute"] == "2025-11-20T17:40:00Z" and direct[0][0]["trials"] == 2
        assert [r["trials"] for r in direct[2]] == [0, 1] + [0] * 10 and sum(r["trials"] for r in direct[3]) == 1
        assert len(direct[1]) == 3 and direct[1][0]["trials"] == 4
        monkeypatch.setattr(queries, "CHUNK_ROWS", 0)  # too many rows for one query: through rollup()
        assert [src.rollup_records(T0, end, *args) for args, _ in cases] == direct


def test_summaries_are_cached_as_copies_and_bounded(tmp_path: Path) -> None:
    rows = [*_rows(), Row(T0 + timedelta(minutes=2), -1.0, "ok"), Row(T0 + timedelta(minutes=3), -5.0, "ok")]
    with _source(tmp_path, rows=rows) as src:
        end = T0 + timedelta(minutes=10)
        first = src.summary(T0, end)
        assert {k: first[k] for k in ("trials", "ok", "timeouts", "errors", "failures", "invalid_latency")} == {
            "trials": 7, "ok": 5, "timeouts": 1, "errors": 1, "failures": 2, "invalid_latency": 2}  # fmt: skip
        assert first["p50_ms"] == 3000.0 and first["failure_rate"] == pytest.approx(2 / 7)
        first["trials"] = -1  # the caller's copy
        again = src.summary(T0, end)
        assert again["trials"] == 7 and len(src._summaries) == 1  # from the cache, untouched
        assert src.summary(T0, end, run_id="run-2")["trials"] == 1 and src.summary(T0, end, model="qwen3:8b")["trials"] == 1
        one = src.summary(T0 + timedelta(minutes=1), T0 + timedelta(minutes=1, seconds=6))
        assert (one["trials"], one["p50_ms"], one["p95_ms"]) == (1, 3000.0, 3000.0)  # a single latency is every percentile
        for i in range(20):
            src.summary(T0 + timedelta(seconds=i), end)
        assert len(src._summaries) == 16  # bounded: the oldest go first
        newest = (int((T0 + timedelta(seconds=19)).timestamp() * 1_000_000), int(end.timestamp() * 1_000_000), None, None)
        assert list(src._summaries)[-1] == newest
        assert (int(T0.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000), None, None) not in src._summaries


@pytest.mark.parametrize(("run_id", "model"), [("run-1", None), (None, "qwen3:8b")])
def test_a_filtered_range_too_dense_for_memory_is_halved_with_its_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         run_id: str | None, model: str | None) -> None:  # fmt: skip
    """DuckDB's out-of-memory halves the range down to single buckets (then the bounded path):
    every half keeps the run and model asked for, and no bucket is lost or doubled."""
    import duckdb

    from oasis_ops.trials import queries

    original = queries.execute

    def out_of_memory(con, name, params):  # type: ignore[no-untyped-def]
        if name == "trials_rollup":  # every exact query fails: down to one bucket each
            raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 32.0 MiB")
        return original(con, name, params)

    end = T0 + timedelta(minutes=11)
    with _source(tmp_path) as src:
        expected = src.rollup(T0, end, run_id=run_id, model=model)
    monkeypatch.setattr(queries, "execute", out_of_memory)
    with _source(tmp_path, "again.duckdb") as src:
        halved = src.rollup(T0, end, run_id=run_id, model=model)
    assert halved.equals(expected)


def test_empty_aggregates_latency_rounding_and_spans_by_model(tmp_path: Path) -> None:
    from oasis_ops.trials.records import latency_ms
    from oasis_ops.trials.rollup import empty_aggregates

    empty = empty_aggregates()
    assert {c: str(t) for c, t in empty.dtypes.items()} == {
        "trials": "int64", "ok": "int64", "timeouts": "int64", "errors": "int64",
        "p50_ms": "float64", "p95_ms": "float64", "p99_ms": "float64", "max_ms": "float64"}  # fmt: skip
    assert empty.index.name == "bucket_us" and str(empty.index.dtype) == "int64" and len(empty) == 0
    assert latency_ms(1234.5678) == 1234.57 and latency_ms(float("nan")) is None
    with _source(tmp_path) as src:
        assert [s.run_id for s in src.run_spans(model="qwen3:8b")] == ["run-1"]
        assert [s.run_id for s in src.run_spans()] == ["run-1", "run-2"]


def test_the_rollup_cache_hits_extends_misses_and_bounds(tmp_path: Path) -> None:
    """RollupCache against a computation that records its calls: a range inside an entry is a hit
    (no call), an overlapping or touching one extends it by the missing sides only, a disjoint one
    replaces it, a range wider than max_buckets is never cached, keys are (width, run, model), and
    at most max_entries are kept (the least recently used go)."""
    import pandas as pd

    from oasis_ops.trials.rollup import RollupCache

    calls: list[tuple[object, ...]] = []

    def compute(start: int, end: int, width: int, run_id: object, model: object, only: object) -> pd.DataFrame:
        calls.append((start, end, width, run_id, model))
        index = pd.Index(range(start, end, width), dtype="int64", name="bucket_us")
        tag = len(str(run_id)) + 10 * len(str(model))  # what the filters were, in the values
        return pd.DataFrame({"trials": [tag] * len(index)}, index=index)

    cache = RollupCache(compute, max_entries=2, max_buckets=10)
    assert cache.get(0, 5, 1, None, None)["trials"].tolist() == [44] * 5 and calls == [(0, 5, 1, None, None)]
    calls.clear()
    assert cache.get(1, 4, 1, None, None).index.tolist() == [1, 2, 3] and calls == []  # inside: a hit
    assert cache.get(0, 5, 1, None, None).index.tolist() == [0, 1, 2, 3, 4] and calls == []  # the same edges
    assert cache.get(3, 8, 1, None, None).index.tolist() == [3, 4, 5, 6, 7] and calls == [(5, 8, 1, None, None)]
    calls.clear()
    assert cache.get(8, 10, 1, None, None).index.tolist() == [8, 9] and calls == [(8, 10, 1, None, None)]  # touching
    calls.clear()
    assert cache.stats == {"hits": 2, "partial": 2, "misses": 1, "bucket_recomputes": 0}
    assert len(cache.get(0, 20, 1, None, None)) == 20 and calls == [(0, 20, 1, None, None)]  # 20 buckets > 10: uncached
    calls.clear()
    assert cache.get(2, 3, 1, None, None).index.tolist() == [2] and calls == []  # the entry is still [0, 10)
    assert cache.get(50, 52, 1, None, None).index.tolist() == [50, 51] and calls == [(50, 52, 1, None, None)]  # disjoint
    calls.clear()
    assert cache.get(0, 2, 1, None, None).index.tolist() == [0, 1] and calls == [(0, 2, 1, None, None)]  # replaced
    calls.clear()
    assert cache.get(0, 2, 1, "run-2", None)["trials"].tolist() == [45, 45]  # another key: its own entry
    assert cache.get(0, 2, 1, None, "qwen3:8b")["trials"].tolist() == [84, 84]
    assert len(cache) == 2 and calls == [(0, 2, 1, "run-2", None), (0, 2, 1, None, "qwen3:8b")]
    calls.clear()
    cache.get(0, 2, 1, None, None)  # the oldest key was dropped: computed again
    assert calls == [(0, 2, 1, None, None)]


def test_the_writer_refuses_unknown_fields_by_name_and_an_empty_flush_writes_nothing(tmp_path: Path) -> None:
    from oasis_ops.trials.writer import TrialWriter

    writer = TrialWriter(tmp_path / "u.duckdb", background=False)
    try:
        with pytest.raises(ValueError) as refused:
            writer.write({**_trial(1), "latency": 5, "colour": "red"})
        assert str(refused.value) == ("unknown trial fields: ['colour', 'latency']; expected some of ('trial_id', 'run_id', "
                                      "'model', 'started_at', 'finished_at', 'latency_ms', 'status', 'error', "
                                      "'prompt_tokens', 'completion_tokens', 'queued_ms')")  # fmt: skip
        assert writer.pending == 0 and writer.flush() == 0 and not (tmp_path / "u.duckdb").exists()
        writer.write(_trial(2))
        assert writer.flush() == 1 and writer.flush() == 0
    finally:
        writer.close()


def test_records_are_per_minute_by_default_and_a_repeated_summary_is_served_from_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oasis_ops.trials.queries as queries

    with _source(tmp_path) as src:
        records = src.rollup_records(T0, T0 + timedelta(minutes=10))
        assert len(records) == 10 and [r["trials"] for r in records][:2] == [2, 2]
        asked: list[str] = []
        real = queries.execute

        def counting(con: object, name: str, *args: object, **kwargs: object) -> object:
            asked.append(name)
            return real(con, name, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(queries, "execute", counting)
        first = src.summary(T0, T0 + timedelta(minutes=10))
        again = src.summary(T0, T0 + timedelta(minutes=10))
        assert first == again and first["trials"] == 5 and asked.count("trials_summary") == 1


def test_appended_rows_are_recomputed_one_cluster_of_nearby_buckets_at_a_time() -> None:
    """Rows appended in buckets 3, 10 and 150 of a cached per-1 rollup: 3 and 10 are near (within
    CLUSTER_GAP_BUCKETS), 150 is far: two recomputes, [3, 11) for buckets 3 and 10, and [150, 151)."""
    import numpy as np
    import pandas as pd

    from oasis_ops.trials.rollup import RollupCache

    calls: list[tuple[object, ...]] = []

    def compute(start: int, end: int, width: int, run_id: object, model: object, only: object) -> pd.DataFrame:
        calls.append((start, end, only))
        buckets = list(only) if only is not None else list(range(start, end, width))  # type: ignore[call-overload]
        return pd.DataFrame({"trials": [1] * len(buckets)}, index=pd.Index(buckets, dtype="int64", name="bucket_us"))

    cache = RollupCache(compute, max_entries=2, max_buckets=1000)
    cache.get(0, 200, 1, None, None)
    calls.clear()
    started = np.array([3, 10, 10, 150], dtype="int64")
    cache.apply_new_rows(started, np.array(["r"] * 4, dtype=object), np.array(["m"] * 4, dtype=object))
    assert calls == [(3, 11, [3, 10]), (150, 151, [150])]
    assert cache.stats["bucket_recomputes"] == 3
    calls.clear()
    cache.apply_new_rows(np.array([7, 150], dtype="int64"), np.array(["r"] * 2, dtype=object), np.array(["m"] * 2, dtype=object))
    assert calls == [(7, 8, [7]), (150, 151, [150])]  # two buckets, far apart: one cluster each


def test_errors_name_the_user_s_file_not_our_copy_of_it(tmp_path: Path) -> None:
    from oasis_ops.trials.snapshot import Snapshotter

    source = tmp_path / "trials.duckdb"
    snaps: Snapshotter[int] = Snapshotter(source, tmp_path / "snap", open_snapshot=lambda p: None,  # type: ignore[arg-type,return-value]
                                         validate=lambda con: 0)  # fmt: skip
    copy = tmp_path / "snap" / "snap-1-ab-1.duckdb"
    snaps._tried = [copy, copy.with_name(copy.name + ".wal")]
    # the WAL's path holds the copy's: the longer one is replaced first
    assert snaps._source_message(f"replay of {copy}.wal failed") == (
        f"{source} cannot be read as a DuckDB database: replay of {source} failed")
    assert snaps._source_message(f"{copy} is not a DuckDB database") == f"{source} is not a DuckDB database"
