"""Bounded cost of reading trials: the run/model groups saved between processes
(oasis_ops.trials.groupcache: used when the table is the same, extended when it only grew,
recomputed otherwise), stale snapshot directories pruned, and exact percentiles within
memory_limit (full buckets by histogram, ranges too dense for memory halved)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_trials import T0, Row, create_canonical, insert_canonical, trial_settings

from oasis_ops.trials import TrialSource


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = TrialSource._group_rows

    def counting(self: TrialSource, skip_rows: int):  # type: ignore[no-untyped-def]
        calls.append(skip_rows)
        return original(self, skip_rows)

    monkeypatch.setattr(TrialSource, "_group_rows", counting)
    return calls


def test_groups_are_reused_extended_and_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "trials.duckdb"
    create_canonical(db, [Row(T0 + timedelta(seconds=i), 4000.0, "ok", run_id="run-1") for i in range(100)])
    settings = trial_settings()
    calls = _counted(monkeypatch)
    with TrialSource(db, settings) as src:
        assert src.latest_run() == "run-1"
    assert calls == [0]  # first process: a full scan, saved
    with TrialSource(db, settings) as src:
        assert src.latest_run() == "run-1" and src.run_span("run-1").trials == 100  # type: ignore[union-attr]
    assert calls == [0]  # same table: no scan at all
    con = duckdb.connect(str(db))
    insert_canonical(con, [Row(T0 + timedelta(hours=1, seconds=i), 4000.0, "ok", run_id="run-2") for i in range(10)], first_id=101)
    con.close()
    with TrialSource(db, settings) as src:
        assert src.latest_run() == "run-2" and src.run_span("run-2").trials == 10  # type: ignore[union-attr]
        assert src.run_span("run-1").trials == 100  # type: ignore[union-attr]
    assert calls == [0, 100]  # grew: only the 10 new rows grouped
    # rewritten (not appended): the last row differs, so everything is grouped again
    db.unlink()
    create_canonical(db, [Row(T0 + timedelta(seconds=i), 4000.0, "ok", run_id="run-9") for i in range(110)])
    with TrialSource(db, settings) as src:
        assert src.latest_run() == "run-9" and src.run_span("run-9").trials == 110  # type: ignore[union-attr]
    assert calls == [0, 100, 0]


def test_a_damaged_cache_file_is_ignored(tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    create_canonical(db, [Row(T0 + timedelta(seconds=i), 4000.0, "ok") for i in range(20)])
    settings = trial_settings()
    with TrialSource(db, settings) as src:
        cache = src._snapshots.directory / "groups.json"
    assert cache.is_file()
    cache.write_text("{not json")
    with TrialSource(db, settings) as src:
        assert src.run_span("run-1").trials == 20  # type: ignore[union-attr]


def test_stale_snapshot_directories_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    from oasis_ops.trials.snapshot import prune_source_dirs

    root = tmp_path / "snapshots"
    keep = root / "0123456789abcdef"
    old, recent, busy, other = (root / n for n in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc", "not-a-source-dir"))
    for d in (keep, old, recent, busy, other):
        d.mkdir(parents=True)
    (old / "groups.json").write_text("{}")
    (old / f"snap-{2**22 + 12345}-x-1.duckdb").write_text("")  # a dead process's copy
    (busy / f"snap-{os.getpid()}-x-1.duckdb").write_text("")  # a running process's copy
    week_ago = time.time() - 8 * 86400
    for d in (keep, old, busy, other):
        os.utime(d, (week_ago, week_ago))
    assert prune_source_dirs(root, keep=keep) == [old]
    assert not old.exists() and keep.is_dir() and recent.is_dir() and busy.is_dir() and other.is_dir()


def _rows_for_bounds() -> list[Row]:
    import random

    rng = random.Random(4)
    rows = [Row(T0 + timedelta(seconds=i * 0.5), rng.lognormvariate(8.3, 0.3), "timeout" if i % 50 == 0 else "ok") for i in range(3000)]
    rows.append(Row(T0 + timedelta(seconds=100), None, "error"))
    return rows


def test_full_buckets_take_the_bounded_percentiles_and_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets holding more latencies than memory_limit allows an exact quantile to keep
    (BUCKET_VALUES_BOUND) get their percentiles from the histogram path: the same numbers."""
    from helpers_trials import assert_rollup_equal, independent_rollup

    import oasis_ops.trials.queries as source_module

    db = tmp_path / "trials.duckdb"
    rows = _rows_for_bounds()
    create_canonical(db, rows)
    start, end = T0, T0 + timedelta(minutes=30)
    expected = independent_rollup(rows, start, end, timedelta(minutes=5))
    monkeypatch.setattr(source_module, "BUCKET_VALUES_BOUND", 100)
    calls: list[int] = []
    original = TrialSource._bounded_buckets

    def counting(self: TrialSource, *args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(TrialSource, "_bounded_buckets", counting)
    with TrialSource(db, trial_settings()) as src:
        assert_rollup_equal(src.rollup(start, end, "5m"), expected)
    assert calls  # the bounded path was taken


def test_a_range_too_dense_for_memory_is_halved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB's out-of-memory on a range (rows denser than the average): halved down to one
    bucket, which takes the bounded path; the answer is the same."""
    from helpers_trials import assert_rollup_equal, independent_rollup

    import oasis_ops.trials.queries as source_module

    db = tmp_path / "trials.duckdb"
    rows = _rows_for_bounds()
    create_canonical(db, rows)
    start, end = T0, T0 + timedelta(minutes=30)
    expected = independent_rollup(rows, start, end, timedelta(minutes=5))
    original = source_module.execute
    failed: list[int] = []

    def failing(con, name, params):  # type: ignore[no-untyped-def]
        if name == "trials_rollup" and params["to"] - params["from"] > timedelta(minutes=5):
            failed.append(1)
            raise duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 32.0 MiB")
        return original(con, name, params)

    monkeypatch.setattr(source_module, "execute", failing)
    with TrialSource(db, trial_settings()) as src:
        assert_rollup_equal(src.rollup(start, end, "5m"), expected)
    assert failed


def test_rollup_records_equal_the_rollup_frame_as_records(tmp_path: Path) -> None:
    """rollup_records() (one query straight into Python, for a short-lived command) gives the
    same records as machine_records(rollup()) (the cached pandas path): gaps, filters, odd
    latencies and a bucket that straddles the data's edge included."""
    import random

    from oasis_ops.trials.rollup import machine_records

    rng = random.Random(7)
    rows = []
    for i in range(3000):
        at = T0 + timedelta(seconds=i * 3 + (3600 if i > 2000 else 0))  # an hour's gap
        latency = rng.choice([None, -5.0, rng.uniform(10, 90_000), 1234.5678])
        rows.append(Row(at, latency, rng.choice(["ok", "ok", "ok", "timeout", "error"]), run_id=f"run-{i // 1000}",
                        model=rng.choice(["a", "b", None])))  # fmt: skip
    db = tmp_path / "trials.duckdb"
    create_canonical(db, rows)
    con = duckdb.connect(str(db))
    con.execute("UPDATE trials SET latency_ms = 'NaN'::DOUBLE WHERE trial_id % 97 = 0")
    con.close()
    cases = [
        (T0 - timedelta(minutes=7), T0 + timedelta(hours=4), "1m", None, None),
        (T0 + timedelta(seconds=30), T0 + timedelta(hours=2, seconds=1), "5m", "run-1", None),
        (T0, T0 + timedelta(hours=3), "15m", None, "b"),
        (T0 + timedelta(hours=9), T0 + timedelta(hours=10), "1m", None, None),  # no trials at all
    ]
    with TrialSource(db, trial_settings()) as src:
        for start, end, bucket, run_id, model in cases:
            fast = src.rollup_records(start, end, bucket, run_id=run_id, model=model)
            assert fast == machine_records(src.rollup(start, end, bucket, run_id=run_id, model=model))
            assert any(r["trials"] for r in fast) or start > T0 + timedelta(hours=5)
