"""Contract 1 with real runner processes: the reader never costs a trial and stays <= 10 s stale.

Two worst-case writers run in parallel as separate Python processes using duckdb directly:
(a) holds the file open read-write for the whole run, inserting every ~50 ms;
(b) connects, inserts one trial and closes, per trial, with no retry (a failed connect = a
lost trial, recorded by the writer itself). Our reader refreshes every second for 20 s.
A control at the end shows the test can fail: a plain read-only connection on the live file
does make writer (b) lose trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from helpers_trials import CANONICAL_DDL, WRITERS, trial_settings

from oasis_ops.trials import TrialSource

RUN_S = 20.0
INTERVAL_S = 0.05
MAX_STALE_S = 10.0


def _start_writer(script: str, db: Path, seconds: float, result: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WRITERS / script), str(db), str(seconds), str(INTERVAL_S), str(result)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _new_db(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(CANONICAL_DDL)
    con.close()


@pytest.mark.slow
def test_live_writers_lose_nothing_and_reader_stays_fresh(tmp_path: Path) -> None:
    dbs = {"hold_open": tmp_path / "a.duckdb", "per_trial": tmp_path / "b.duckdb"}
    results = {name: tmp_path / f"{name}.json" for name in dbs}
    for db in dbs.values():
        _new_db(db)
    procs = {name: _start_writer(f"{name}.py", dbs[name], RUN_S, results[name]) for name in dbs}
    sources: dict[str, TrialSource] = {}
    worst_stale = {name: 0.0 for name in dbs}
    refreshes = {name: 0 for name in dbs}
    try:
        time.sleep(1.0)  # the first trials land
        sources = {name: TrialSource(db, trial_settings(snapshot_min_interval_s=1.0)) for name, db in dbs.items()}
        deadline = time.time() + RUN_S - 2.0
        while time.time() < deadline:
            tick = time.time()
            for name, src in sources.items():
                fresh = src.refresh()
                now = datetime.now(UTC)
                frame = src.rollup(now - timedelta(minutes=2), now)
                assert 0 < frame["trials"].sum() <= fresh.trials, name
                assert fresh.newest_trial_at is not None, name
                stale = (now - fresh.newest_trial_at).total_seconds()
                worst_stale[name] = max(worst_stale[name], stale)
                refreshes[name] += 1
                assert stale <= MAX_STALE_S, f"{name}: view {stale:.1f} s stale ({fresh})"
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        for proc in procs.values():
            proc.wait(timeout=30)
    finally:
        for src in sources.values():
            src.close()
        for proc in procs.values():
            _stop(proc)

    for name, db in dbs.items():
        outcome = json.loads(results[name].read_text())
        assert outcome["failures"] == [], f"{name} lost trials: {outcome['failures'][:3]}"
        assert outcome["inserted"] == outcome["attempted"] > 100, (name, outcome)
        con = duckdb.connect(str(db), read_only=True)
        (stored,) = con.execute("SELECT count(*) FROM trials").fetchall()[0]
        con.close()
        assert stored == outcome["inserted"], (name, stored, outcome["inserted"])
        # and our reader ends up with every one of them
        with TrialSource(db, trial_settings()) as src:
            assert src.freshness().trials == stored
    assert min(refreshes.values()) >= 10, refreshes
    print(f"worst staleness: {worst_stale}, refreshes: {refreshes}")


@pytest.mark.slow
def test_control_a_read_only_connection_on_the_live_file_costs_trials(tmp_path: Path) -> None:
    """Why snapshots: holding even a read-only connection makes writer (b) lose trials."""
    db = tmp_path / "control.duckdb"
    _new_db(db)
    result = tmp_path / "control.json"
    proc = _start_writer("per_trial.py", db, 3.0, result)
    try:
        time.sleep(0.5)
        deadline = time.time() + 1.5
        while time.time() < deadline:
            try:
                reader = duckdb.connect(str(db), read_only=True)
            except duckdb.Error:
                time.sleep(0.01)  # the writer holds it right now
                continue
            time.sleep(1.0)
            reader.close()
            break
        proc.wait(timeout=20)
    finally:
        _stop(proc)
    outcome = json.loads(result.read_text())
    assert outcome["failures"], outcome
    assert any("lock" in f.lower() for f in outcome["failures"])
