"""TrialSource's queries over the current snapshot: rollups (dense and sparse), summaries and
the "are trials completing" counts (a mixin: the snapshot, its groups and caches are TrialSource's).

Rollups are cut into time chunks by the data's density (CHUNK_ROWS), clamped to where trials are,
and kept exact within the connection's memory_limit: buckets too full for an in-memory quantile
take the histogram path (oasis_ops.trials.bounded), a range DuckDB cannot hold is halved.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from oasis_ops import duck
from oasis_ops.errors import TooManyBuckets
from oasis_ops.sqlfiles import sql
from oasis_ops.trials.bounded import bounded_buckets, exact_percentiles
from oasis_ops.trials.records import grid_records
from oasis_ops.trials.rollup import AGG_COLUMNS, RollupCache, empty_aggregates, to_grid, to_rows
from oasis_ops.trials.timeparse import (
    as_utc,
    auto_bucket,
    bucket_seconds,
    ceil_to_bucket,
    epoch_us,
    floor_to_bucket,
    from_epoch_us,
)

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from oasis_ops.settings import Settings
    from oasis_ops.trials.groups import Groups
    from oasis_ops.trials.mapping import TrialMapping

ENDED_LOOKBACK = timedelta(hours=1)  # ended_ok_since(): trials longer than this are not looked for
# Rollups over more (estimated) rows than this run in time chunks: a quantile's state cannot
# spill to disk, so one query over 10M trials would need far more than the memory_limit.
CHUNK_ROWS = 1_000_000
# one bucket's latencies that an exact quantile may hold in memory (8 bytes each, and DuckDB
# doubles its buffers: 400k fits the 64MB memory_limit); more go through the histogram path
BUCKET_VALUES_BOUND = 400_000
PERCENTILES = (0.5, 0.95, 0.99)


_us, _from_us = epoch_us, from_epoch_us


class TrialQueries:
    """The query half of TrialSource (see oasis_ops.trials.source for the snapshot half)."""

    settings: Settings
    path: Path
    _lock: threading.RLock
    _groups: Groups
    _cache: RollupCache
    _summaries: OrderedDict[tuple[Any, ...], dict[str, Any]]

    if TYPE_CHECKING:

        @property
        def _con(self) -> duckdb.DuckDBPyConnection: ...
        @property
        def _state(self) -> Any: ...
        def _check_open(self) -> None: ...
        @property
        def mapping(self) -> TrialMapping: ...

    # --- rollups ------------------------------------------------------------------------------
    def _base_params(self) -> dict[str, Any]:
        return self._state.mapping.params()

    def _range_params(self, start: datetime, end: datetime, run_id: str | None, model: str | None, **extra: Any) -> dict[str, Any]:
        """The mapping plus [start, end) in the time column's own type (zone maps prune) and the filters."""
        mapping = self._state.mapping
        return {**mapping.params(), "from": mapping.time_value(start), "to": mapping.time_value(end),
                "run_id": run_id, "model": model, **extra}  # fmt: skip

    def _span(self) -> tuple[int, int, float] | None:
        """(first and last trial start in epoch µs, the trials' average rows per µs) from the
        groups, or None when no trial has a start time."""
        first_us, last_us = self._groups.first_us(), self._groups.last_us()
        if first_us is None or last_us is None:
            return None
        return first_us, last_us, max(self._state.trials, 1) / max(last_us - first_us, 1)

    def _compute(self, from_us: int, to_us: int, width_us: int, run_id: str | None, model: str | None, only_buckets: Sequence[int]) -> pd.DataFrame:
        span = self._span()
        if span is not None:
            # Only where trials are: a range decades wider than the data costs no extra query.
            from_us, to_us = _clip(from_us, to_us, width_us, span)
            if to_us <= from_us:
                return empty_aggregates()
        chunk_us = to_us - from_us
        if not only_buckets and span is not None:
            rows_per_us = span[2]
            if rows_per_us * width_us > BUCKET_VALUES_BOUND:
                # buckets so full that an exact quantile would hold more latencies than
                # memory_limit allows: each bucket's percentiles from its histogram instead
                return self._bounded_buckets(from_us, to_us, width_us, run_id, model)
            chunk_us = max(width_us, int(CHUNK_ROWS / rows_per_us) // width_us * width_us)
        parts = [
            self._compute_one(lo, min(lo + chunk_us, to_us), width_us, run_id, model, only_buckets)
            for lo in range(from_us, to_us, max(chunk_us, width_us))
        ]
        if len(parts) > 1 or to_us - from_us >= chunk_us:
            duck.trim(self._con, self.settings.duckdb_memory_limit)  # a big range: give its blocks back
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_aggregates()
        if len(parts) == 1:
            return parts[0]
        import pandas as pd

        return pd.concat(parts)

    def _compute_one(self, from_us: int, to_us: int, width_us: int, run_id: str | None, model: str | None, only_buckets: Sequence[int]) -> pd.DataFrame:
        params = self._range_params(_from_us(from_us), _from_us(to_us), run_id, model, width_us=width_us, only_buckets=list(only_buckets))
        try:
            frame = execute(self._con, "trials_rollup", params).df()
        except duckdb.OutOfMemoryException:
            # more latencies in this range than memory_limit holds for exact quantiles (the
            # rows are denser here than on average): halve it, down to one bucket
            buckets = (to_us - from_us + width_us - 1) // width_us
            if buckets <= 1:
                return self._bounded_buckets(from_us, to_us, width_us, run_id, model)
            middle = from_us + buckets // 2 * width_us
            halves = [self._compute_one(a, b, width_us, run_id, model, only_buckets) for a, b in ((from_us, middle), (middle, to_us))]
            halves = [h for h in halves if len(h)]
            if len(halves) == 2:
                import pandas as pd

                return pd.concat(halves)
            return halves[0] if halves else empty_aggregates()
        except duckdb.Error as exc:
            raise duck.translate(exc, str(self.path)) from None
        if frame.empty:
            return empty_aggregates()
        frame = frame.set_index("bucket_us")
        frame.index = frame.index.astype("int64")
        frame = frame[list(AGG_COLUMNS)]
        for column in ("trials", "ok", "timeouts", "errors"):
            frame[column] = frame[column].astype("int64")
        for column in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
            frame[column] = frame[column].astype("float64")
        return frame

    def _bounded_buckets(self, from_us: int, to_us: int, width_us: int, run_id: str | None, model: str | None) -> pd.DataFrame:
        """Aggregates of each non-empty bucket in [from_us, to_us) with exact percentiles in bounded
        memory (oasis_ops.trials.bounded: counts, a per-millisecond histogram, then only the values
        around each rank): for buckets of BUCKET_VALUES_BOUND trials or more."""
        params = self._range_params(_from_us(from_us), _from_us(to_us), run_id, model)
        try:
            frame = bounded_buckets(lambda name, p: execute(self._con, name, p), params, from_us, width_us, PERCENTILES, AGG_COLUMNS)
        except duckdb.Error as exc:
            raise duck.translate(exc, str(self.path)) from None
        return frame if len(frame) else empty_aggregates()

    def _exact_percentiles(self, params: dict[str, Any]) -> list[float | None]:
        return exact_percentiles(lambda name, p: execute(self._con, name, p), params, PERCENTILES)

    def rollup(
        self,
        start: datetime,
        end: datetime,
        bucket: str = "1m",
        run_id: str | None = None,
        model: str | None = None,
    ) -> pd.DataFrame:
        """One row per bucket in [start, end), empty buckets included (see OUTPUT_COLUMNS)."""
        start_us, end_us, width_us = self._grid(start, end, bucket)
        with self._lock:
            self._check_open()
            aggregates = self._cache.get(start_us, end_us, width_us, run_id, model) if end_us > start_us else empty_aggregates()
        return to_grid(aggregates, start_us, end_us, width_us)

    def rollup_records(
        self,
        start: datetime,
        end: datetime,
        bucket: str = "1m",
        run_id: str | None = None,
        model: str | None = None,
    ) -> list[dict[str, Any]]:
        """rollup() as machine records (oasis_ops.trials.records), the same values. A range that
        one query answers within memory is read straight into Python records: a short-lived
        command (`timeline --last 6h`) then needs no pandas; any other goes through rollup()."""
        start_us, end_us, width_us = self._grid(start, end, bucket)
        with self._lock:
            self._check_open()
            aggregates = self._one_query(start_us, end_us, width_us, run_id, model)
        if aggregates is None:
            from oasis_ops.trials.rollup import machine_records

            return machine_records(self.rollup(start, end, bucket, run_id, model))
        return grid_records(aggregates, start_us, end_us, width_us)

    def _grid(self, start: datetime, end: datetime, bucket: str) -> tuple[int, int, int]:
        """(first bucket start, end, width) in epoch µs; TooManyBuckets past max_buckets (every
        bucket becomes a row, gaps included: past the bound, refuse with one line)."""
        width_s = bucket_seconds(bucket)
        start_us = _us(floor_to_bucket(start, width_s))
        end_us = _us(ceil_to_bucket(end, width_s))
        width_us = width_s * 1_000_000
        limit = int(self.settings.max_buckets)
        if (end_us - start_us) // width_us > limit:
            fits = auto_bucket(start, end, max_buckets=limit)
            raise TooManyBuckets(
                f"{as_utc(start):%Y-%m-%d %H:%M} → {as_utc(end):%Y-%m-%d %H:%M} UTC in {bucket} buckets is "
                f"{(end_us - start_us) // width_us:,} buckets, more than max_buckets ({limit:,})",
                hint=f"use a bucket of {fits} or wider, or a narrower range with --from/--to",
            )
        if end_us <= start_us:
            end_us = start_us + width_us if as_utc(end) > as_utc(start) else start_us
        return start_us, end_us, width_us

    def _one_query(self, from_us: int, to_us: int, width_us: int, run_id: str | None, model: str | None) -> dict[int, tuple[Any, ...]] | None:
        """{bucket_us: aggregates} of [from_us, to_us) from one trials_rollup query, or None when
        the range needs _compute's chunks or bounded path (more rows than CHUNK_ROWS, or buckets
        fuller than BUCKET_VALUES_BOUND, by the groups' average density) or the query runs out
        of memory."""
        span = self._span()
        if span is None:
            return {}
        from_us, to_us = _clip(from_us, to_us, width_us, span)
        if to_us <= from_us:
            return {}
        rows_per_us = span[2]
        if rows_per_us * (to_us - from_us) > CHUNK_ROWS or rows_per_us * width_us > BUCKET_VALUES_BOUND:
            return None
        params = self._range_params(_from_us(from_us), _from_us(to_us), run_id, model, width_us=width_us, only_buckets=[])
        try:
            rows = execute(self._con, "trials_rollup", params).fetchall()
        except duckdb.OutOfMemoryException:
            return None
        except duckdb.Error as exc:
            raise duck.translate(exc, str(self.path)) from None
        return {int(row[0]): tuple(row[1:]) for row in rows}

    def rollup_sparse(
        self,
        start: datetime,
        end: datetime,
        bucket: str = "1m",
        run_id: str | None = None,
        model: str | None = None,
    ) -> pd.DataFrame:
        """Like rollup(), but only the buckets that hold trials (no empty rows), so its size
        follows the data, not the range: a run whose start times span centuries (a clock bug)
        still scans in 1-minute buckets. TooManyBuckets beyond max_buckets buckets WITH trials."""
        width_s = bucket_seconds(bucket)
        start_us = _us(floor_to_bucket(start, width_s))
        end_us = _us(ceil_to_bucket(end, width_s))
        width_us = width_s * 1_000_000
        if end_us <= start_us:
            return to_grid(empty_aggregates(), start_us, start_us, width_us)
        limit = int(self.settings.max_buckets)
        with self._lock:
            self._check_open()
            params = self._range_params(_from_us(start_us), _from_us(end_us), run_id, model, width_us=width_us)
            (count,) = _one(self._con, "trials_bucket_count", params)
            if int(count) > limit:
                raise TooManyBuckets(
                    f"{as_utc(start):%Y-%m-%d %H:%M} → {as_utc(end):%Y-%m-%d %H:%M} UTC has trials in {int(count):,} "
                    f"{bucket} buckets, more than max_buckets ({limit:,})",
                    hint="narrow the range with --from/--to",
                )
            aggregates = self._compute(start_us, end_us, width_us, run_id, model, ())
        return to_rows(aggregates)

    def summary(self, start: datetime, end: datetime, run_id: str | None = None, model: str | None = None) -> dict[str, Any]:
        """trials, ok, timeouts, errors, failures, failure_rate, p50_ms, p95_ms, p99_ms, max_ms over [start, end)."""
        key = (_us(start), _us(end), run_id, model)
        with self._lock:
            self._check_open()
            cached = self._summaries.get(key)
            if cached is not None:
                self._summaries.move_to_end(key)
                return dict(cached)
            params = self._range_params(start, end, run_id, model)
            (row,) = execute(self._con, "trials_summary", params).fetchall()
            trials, ok, timeouts, errors, with_latency, invalid_latency, max_ms = row
            p50, p95, p99 = self._exact_percentiles(params) if with_latency else (None, None, None)
            failures = int(timeouts) + int(errors)
            result: dict[str, Any] = {
                "trials": int(trials),
                "ok": int(ok),
                "timeouts": int(timeouts),
                "errors": int(errors),
                "failures": failures,
                "failure_rate": failures / trials if trials else None,
                "p50_ms": _float(p50),
                "p95_ms": _float(p95),
                "p99_ms": _float(p99),
                "max_ms": _float(max_ms),
                # NaN, ±inf or negative latencies: counted as trials, left out of the latencies
                "invalid_latency": int(invalid_latency or 0),
            }
            self._summaries[key] = result
            while len(self._summaries) > 16:
                self._summaries.popitem(last=False)
            return dict(result)

    def completed_since(self, ts: datetime, run_id: str | None = None, model: str | None = None) -> int:
        """Ok trials that started at or after `ts` (the watchdog's 'are trials completing'), of
        one model when `model` is given and the table has a model column."""
        with self._lock:
            self._check_open()
            mapping = self._state.mapping
            params = {
                **mapping.params(),
                "from": mapping.time_value(ts),
                "run_id": run_id,
                "model": model if mapping.model_column is not None else None,
            }
            (count,) = _one(self._con, "trials_completed_since", params)
            return int(count)

    def exporter_histogram(self, run_id: str | None = None) -> list[tuple[Any, ...]]:
        """(model, outcome, bucket index or None, trials, latency ms sum) over the whole table (or
        one run): the Prometheus exporter's histogram and counters (sql/trials_exporter_histogram.sql)."""
        with self._lock:
            self._check_open()
            params = {**self._state.mapping.params(), "run_id": run_id}
            try:
                return [tuple(row) for row in execute(self._con, "trials_exporter_histogram", params).fetchall()]
            except duckdb.Error as exc:
                raise duck.translate(exc, "trials_exporter_histogram") from None

    def token_totals(self) -> list[tuple[Any, ...]]:
        """(model, prompt tokens, completion tokens) when the table records tokens, else []."""
        with self._lock:
            self._check_open()
            mapping = self._state.mapping
            try:
                columns = {str(row[0]) for row in self._con.execute(sql("trials_columns"), {"table": mapping.table}).fetchall()}
                if not {"prompt_tokens", "completion_tokens"} <= columns:
                    return []
                return [tuple(row) for row in execute(self._con, "trials_token_totals", mapping.params()).fetchall()]
            except duckdb.Error as exc:
                raise duck.translate(exc, "trials_token_totals") from None

    def ended_ok_since(self, ts: datetime, model: str | None) -> int:
        """Ok trials (of `model`, when the table has a model column) that ended at or after `ts`,
        whenever they started (within ENDED_LOOKBACK before `ts`): a model's runner served then."""
        with self._lock:
            self._check_open()
            mapping = self._state.mapping
            params = {
                **mapping.params(),
                "started_from": mapping.time_value(ts - ENDED_LOOKBACK),
                "from_us": int(as_utc(ts).timestamp() * 1_000_000),
                "model": model if mapping.model_column is not None else None,
            }
            (count,) = _one(self._con, "trials_ended_ok_since", params)
            return int(count)

    @property
    def cache_stats(self) -> dict[str, int]:
        return dict(self._cache.stats)


_PARAM_RE = re.compile(r"\$([A-Za-z_]\w*)")
_COMMENT_RE = re.compile(r"--[^\n]*")


@functools.cache
def _param_names(name: str) -> frozenset[str]:
    return frozenset(_PARAM_RE.findall(_COMMENT_RE.sub("", sql(name))))


def execute(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Run sql/<name>.sql with the parameters it names (DuckDB rejects extra ones)."""
    wanted = _param_names(name)
    return con.execute(sql(name), {k: v for k, v in params.items() if k in wanted})


def _one(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> tuple[Any, ...]:
    try:
        (row,) = execute(con, name, params).fetchall()
    except duckdb.Error as exc:
        raise duck.translate(exc, name) from None
    return tuple(row)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    result = float(value)
    return None if np.isnan(result) else result


def _clip(from_us: int, to_us: int, width_us: int, span: tuple[int, int, float]) -> tuple[int, int]:
    """[from_us, to_us) narrowed to the buckets from the first trial's to the last one's."""
    first_us, last_us, _density = span
    return max(from_us, first_us // width_us * width_us), min(to_us, last_us // width_us * width_us + width_us)
