"""The runner-side TrialWriter: batches, retries a lock held by another process, loses nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_trials import T0, trial_settings

from oasis_ops.errors import DatabaseLocked
from oasis_ops.trials import TrialSource
from oasis_ops.trials.writer import TrialWriter


def _trial(i: int) -> dict[str, object]:
    started = T0 + timedelta(seconds=i)
    return {"trial_id": i, "run_id": "run-w", "model": "gemma4:e4b", "started_at": started,
            "finished_at": started + timedelta(seconds=4), "latency_ms": 4000.0 + i, "status": "ok"}


def test_writer_creates_table_batches_and_is_readable(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with TrialWriter(db, batch_size=10, background=False) as writer:
        for i in range(25):
            writer.write(_trial(i))
        assert writer.written == 20 and writer.pending == 5  # two full batches flushed
    assert writer.written == 25 and writer.pending == 0
    with TrialSource(db, trial_settings()) as src:
        assert src.freshness().trials == 25 and src.runs()["run_id"].tolist() == ["run-w"]


def test_writer_retries_while_another_process_holds_the_file(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    duckdb.connect(str(db)).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time, sys
        con = duckdb.connect({str(db)!r})
        print("held", flush=True)
        time.sleep(1.5)
        con.close()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        writer = TrialWriter(db, batch_size=100, background=False, retry_for_s=20)
        for i in range(3):
            writer.write(_trial(i))
        started = time.monotonic()
        assert writer.flush() == 3
        assert writer.lock_retries > 0 and time.monotonic() - started > 0.5
        writer.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(3,)]
    con.close()


def test_writer_keeps_rows_when_the_lock_never_goes(tmp_path: Path) -> None:
    db = tmp_path / "stuck.duckdb"
    duckdb.connect(str(db)).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(db)!r})
        print("held", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        writer = TrialWriter(db, background=False, retry_for_s=0.3)
        writer.write(_trial(1))
        with pytest.raises(DatabaseLocked):
            writer.flush()
        assert writer.pending == 1  # still buffered
        with pytest.raises(DatabaseLocked):
            writer.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    spilled = list(tmp_path.glob("stuck.duckdb.pending-*.jsonl"))
    assert len(spilled) == 1 and '"trial_id": 1' in spilled[0].read_text()
