"""Helpers for the trial-reader tests: fixture databases and an independent rollup.

The independent rollup is plain Python (numpy's linear percentile), so the SQL under test is
checked against a computation that shares nothing with it but the definition.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from oasis_ops.settings import Settings, load_settings

WRITERS = Path(__file__).resolve().parent / "writers"
T0 = datetime(2025, 11, 20, 17, 40, tzinfo=UTC)

CANONICAL_DDL = """
CREATE TABLE trials (
    trial_id BIGINT, run_id VARCHAR, model VARCHAR,
    started_at TIMESTAMP, finished_at TIMESTAMP,
    latency_ms DOUBLE, status VARCHAR, error VARCHAR
)
"""


def trial_settings(**overrides: Any) -> Settings:
    """Settings from the test environment (conftest isolates the snapshot dir), copies on demand."""
    base = {"snapshot_min_interval_s": 0.0}
    base.update(overrides)
    return load_settings(env=None).replace(**base)


@dataclass(frozen=True)
class Row:
    started_at: datetime  # aware UTC
    latency_ms: float | None
    status: str
    run_id: str | None = "run-1"
    model: str | None = "gemma4:e4b"


def create_canonical(path: Path, rows: Iterable[Row] = ()) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(CANONICAL_DDL)
        insert_canonical(con, rows)
    finally:
        con.close()


def insert_canonical(con: duckdb.DuckDBPyConnection, rows: Iterable[Row], first_id: int = 1) -> None:
    values = []
    for i, r in enumerate(rows, first_id):
        naive = r.started_at.astimezone(UTC).replace(tzinfo=None)
        finished = naive + timedelta(milliseconds=r.latency_ms or 0)
        values.append((i, r.run_id, r.model, naive, finished, r.latency_ms, r.status, None))
    if values:
        con.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)


def read_rows(path: Path, query: str) -> list[Row]:
    """Rows from `query` returning (started TIMESTAMPTZ/TIMESTAMP, latency, status, run, model)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        out = []
        for started, latency, status, run_id, model in con.execute(query).fetchall():
            aware = started.replace(tzinfo=UTC) if started.tzinfo is None else started.astimezone(UTC)
            out.append(Row(aware, None if latency is None else float(latency), status, run_id, model))
        return out
    finally:
        con.close()


def independent_rollup(
    rows: Sequence[Row],
    start: datetime,
    end: datetime,
    width: timedelta = timedelta(minutes=1),
    *,
    ok_words: Sequence[str] = ("ok",),
    timeout_words: Sequence[str] = ("timeout",),
    run_id: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Per-bucket rollup in plain Python; `start` must be bucket-aligned."""
    buckets: list[dict[str, Any]] = []
    t = start
    while t < end:
        members = [
            r for r in rows
            if t <= r.started_at < t + width
            and (run_id is None or r.run_id == run_id)
            and (model is None or r.model == model)
        ]
        latencies = [r.latency_ms for r in members if r.latency_ms is not None]
        ok = sum(r.status in ok_words for r in members)
        timeouts = sum(r.status in timeout_words for r in members)
        errors = len(members) - ok - timeouts

        def pct(q: float, values: list[float] = latencies) -> float:
            return float(np.percentile(values, q, method="linear")) if values else math.nan

        buckets.append(
            {
                "minute": t,
                "trials": len(members),
                "ok": ok,
                "timeouts": timeouts,
                "errors": errors,
                "failure_rate": (timeouts + errors) / len(members) if members else math.nan,
                "p50_ms": pct(50),
                "p95_ms": pct(95),
                "p99_ms": pct(99),
                "max_ms": max(latencies) if latencies else math.nan,
            }
        )
        t += width
    return buckets


def assert_rollup_equal(actual: Any, expected: list[dict[str, Any]]) -> None:
    """`actual` (TrialSource.rollup DataFrame) equals the independent rows, NaN == NaN."""
    got = actual.to_dict("records")
    assert len(got) == len(expected), (len(got), len(expected))
    for g, e in zip(got, expected, strict=True):
        assert g["minute"].to_pydatetime() == e["minute"], (g["minute"], e["minute"])
        for key in ("trials", "ok", "timeouts", "errors"):
            assert g[key] == e[key], (e["minute"], key, g[key], e[key])
        for key in ("failure_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
            a, b = float(g[key]), float(e[key])
            assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (e["minute"], key, a, b)


@contextlib.contextmanager
def writer_holding(db: Path, work: Path) -> Iterator[Path]:
    """writers/hold_open.py holding `db` read-write (one insert every 50 ms) for the whole block:
    yields once it holds the file and made its first insert (its own signal: probing with our
    connects could take the file first); on exit it is told to stop and its result JSON (at the
    yielded path) lists every failed insert. The hold ends on our signal, not after a fixed time,
    so a loaded machine cannot make the test check after the hold is over (120 s is a cap)."""
    result, stop = work / "held.json", work / "held.stop"
    proc = subprocess.Popen([sys.executable, str(WRITERS / "hold_open.py"), str(db), "120", "0.05", str(result), str(stop)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ready = Path(str(result) + ".ready")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ready.exists() and proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the writer never opened the file"
        yield result
        stop.touch()
        proc.wait(timeout=30)
    finally:
        stop.touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
