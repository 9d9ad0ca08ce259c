"""Synthetic trial tables: a realistic day (or 10M rows) generated inside DuckDB, in seconds.

Used by the dashboard's demo database until the demo world lands, by tests and by the bench.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from oasis_ops.sqlfiles import sql
from oasis_ops.trials.snapshot import connect_with_limits
from oasis_ops.trials.timeparse import as_utc

CANONICAL_COLUMNS = ("trial_id", "run_id", "model", "started_at", "finished_at", "latency_ms", "status", "error")
_TIME_COLUMNS = ("started_at", "finished_at")


def _us(value: datetime) -> int:
    return int((as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def generate_trials(
    path: str | os.PathLike[str],
    *,
    n_trials: int,
    start: datetime,
    minutes: float,
    failure_windows: Sequence[tuple[datetime, datetime]] = (),
    seed: int = 0,
    tz_aware: bool = False,
    table: str = "trials",
    columns: Mapping[str, str | None] | None = None,
    run_id: str = "run-1",
    model: str = "gemma4:e4b",
    p50_ms: float = 4100.0,
    sigma: float = 0.2415,  # ln(6.1 / 4.1) / 1.645: p95 ~ 6.1 s
    error_rate: float = 0.0004,
    timeout_rate: float = 0.0001,
    memory_limit: str = "512MB",
    threads: int = 2,
) -> int:
    """Append `n_trials` rows to `table` in the DuckDB file `path` (created if needed).

    `columns` renames canonical columns (`{"started_at": "t0", "latency_ms": None}` renames one
    and drops another); `tz_aware` stores TIMESTAMPTZ instead of naive UTC TIMESTAMP. Calling it
    again appends (e.g. a second run). Returns the number of rows written.
    """
    if n_trials <= 0:
        return 0
    target = Path(path)
    con = connect_with_limits(target, read_only=False, memory_limit=memory_limit, threads=threads)
    try:
        tables = {row[0] for row in con.execute(sql("trials_tables")).fetchall()}
        first_id = 1
        if table in tables:
            ((count,),) = con.execute(sql("trials_count"), {"table": table}).fetchall()
            first_id = int(count) + 1
        params = {
            "n": int(n_trials),
            "start_us": _us(start),
            "span_us": max(int(minutes * 60_000_000), int(n_trials)),
            "seed": int(seed),
            "windows": [{"s": _us(a), "e": _us(b)} for a, b in failure_windows] or [{"s": 0, "e": 0}],
            "first_id": first_id,
            "run_id": run_id,
            "model": model,
            "p50_ms": float(p50_ms),
            "sigma": float(sigma),
            "error_rate": float(error_rate),
            "timeout_rate": float(timeout_rate),
        }
        relation = con.sql(sql("trials_generate"), params=params)
        renames = dict(columns or {})
        expressions = []
        for name in CANONICAL_COLUMNS:
            target_name = renames.get(name, name)
            if target_name is None:
                continue
            expression = duckdb.ColumnExpression(name)
            if tz_aware and name in _TIME_COLUMNS:
                expression = expression.cast(duckdb.sqltypes.TIMESTAMP_TZ)
            expressions.append(expression.alias(target_name))
        shaped = relation.select(*expressions)
        if table in tables:
            shaped.insert_into(table)
        else:
            shaped.create(table)
        con.execute("CHECKPOINT")
        return int(n_trials)
    finally:
        con.close()
