"""Bounded, incrementally refreshed cache of per-bucket rollups.

One entry per (bucket width, run_id, model), covering a contiguous range of buckets. A request
inside the range is served from memory; a request overlapping it computes only the missing
part. When the snapshot grows, the new rows (read by insertion position, never by rescanning
history) name the buckets they touch, and exactly those buckets are recomputed, so late rows
landing in old minutes are handled and percentiles stay exact. Rewrites (fewer rows, or a
different row at the old end) drop the cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from oasis_ops.trials.records import (  # noqa: F401 (re-exported)
    LATENCY_COLUMNS,
    OUTPUT_COLUMNS,
    STAMP_FORMAT,
    latency_ms,
    rate,
    records_csv,
)

if TYPE_CHECKING:
    import pandas as pd

AGG_COLUMNS = ("trials", "ok", "timeouts", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")
COUNT_COLUMNS = ("trials", "ok", "timeouts", "errors")

# compute(from_us, to_us, width_us, run_id, model, only_buckets) -> frame indexed by bucket_us
Compute = Callable[[int, int, int, str | None, str | None, Sequence[int]], "pd.DataFrame"]

CacheKey = tuple[int, str | None, str | None]

CLUSTER_GAP_BUCKETS = 60


@dataclass
class _Entry:
    start_us: int  # first covered bucket start
    end_us: int  # end of the last covered bucket (exclusive)
    frame: pd.DataFrame  # non-empty buckets only, indexed by bucket_us, sorted


def empty_aggregates() -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series(dtype="int64" if c in COUNT_COLUMNS else "float64") for c in AGG_COLUMNS})
    frame.index = pd.Index([], dtype="int64", name="bucket_us")
    return frame


class RollupCache:
    def __init__(self, compute: Compute, *, max_entries: int = 8, max_buckets: int = 250_000) -> None:
        self._compute = compute
        self.max_entries = max_entries
        self.max_buckets = max_buckets
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self.stats = {"hits": 0, "partial": 0, "misses": 0, "bucket_recomputes": 0}

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, start_us: int, end_us: int, width_us: int, run_id: str | None, model: str | None) -> pd.DataFrame:
        """Aggregates of the non-empty buckets in [start_us, end_us) (both bucket-aligned)."""
        key = (width_us, run_id, model)
        entry = self._entries.get(key)
        if (end_us - start_us) // width_us > self.max_buckets:
            return self._compute(start_us, end_us, width_us, run_id, model, ())
        if entry is not None and entry.start_us <= start_us and end_us <= entry.end_us:
            self.stats["hits"] += 1
        elif entry is not None and start_us <= entry.end_us and end_us >= entry.start_us and (
            max(end_us, entry.end_us) - min(start_us, entry.start_us)
        ) // width_us <= self.max_buckets:
            self.stats["partial"] += 1
            parts = [entry.frame]
            if start_us < entry.start_us:
                parts.insert(0, self._compute(start_us, entry.start_us, width_us, run_id, model, ()))
            if end_us > entry.end_us:
                parts.append(self._compute(entry.end_us, end_us, width_us, run_id, model, ()))
            entry = _Entry(min(start_us, entry.start_us), max(end_us, entry.end_us), _concat(parts))
        else:
            self.stats["misses"] += 1
            entry = _Entry(start_us, end_us, self._compute(start_us, end_us, width_us, run_id, model, ()))
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        frame = entry.frame
        lo, hi = frame.index.searchsorted([start_us, end_us])
        return frame.iloc[lo:hi]

    def apply_new_rows(self, started_us: np.ndarray, run_ids: np.ndarray, models: np.ndarray) -> None:
        """Fold appended rows in: recompute exactly the cached buckets they touch."""
        if len(started_us) == 0:
            return
        for (width_us, run_id, model), entry in list(self._entries.items()):
            mask = (started_us >= entry.start_us) & (started_us < entry.end_us)
            if run_id is not None:
                mask &= run_ids == run_id
            if model is not None:
                mask &= models == model
            if not mask.any():
                continue
            touched = np.unique(started_us[mask] // width_us * width_us)
            # one query per cluster of nearby buckets: a late row hours back must not make
            # the recompute scan everything in between
            splits = np.nonzero(np.diff(touched) > CLUSTER_GAP_BUCKETS * width_us)[0] + 1
            fresh_parts = []
            for cluster in np.split(touched, splits):
                fresh_parts.append(
                    self._compute(int(cluster[0]), int(cluster[-1]) + width_us, width_us, run_id, model, [int(b) for b in cluster])
                )
            self.stats["bucket_recomputes"] += len(touched)
            kept = entry.frame.drop(index=touched, errors="ignore")
            entry.frame = _concat([kept, *fresh_parts])


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_aggregates()
    frame = pd.concat(parts) if len(parts) > 1 else parts[0]
    return frame.sort_index()


def to_grid(aggregates: pd.DataFrame, start_us: int, end_us: int, width_us: int) -> pd.DataFrame:
    """Every bucket in [start_us, end_us), empty ones with 0 trials and NaN rates/percentiles."""
    return _frame(aggregates, np.arange(start_us, end_us, width_us, dtype="int64"))


def to_rows(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Only the buckets that hold trials, in time order (a sparse rollup)."""
    return _frame(aggregates, np.sort(aggregates.index.to_numpy(dtype="int64")))


def _frame(aggregates: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    frame = aggregates.reindex(grid)
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].fillna(0).astype("int64")
    trials = frame["trials"].to_numpy()
    failures = (frame["timeouts"] + frame["errors"]).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        failure_rate = np.where(trials > 0, failures / np.maximum(trials, 1), np.nan)
    out = pd.DataFrame(
        {
            "minute": pd.to_datetime(grid, unit="us", utc=True),
            "trials": frame["trials"].to_numpy(),
            "ok": frame["ok"].to_numpy(),
            "timeouts": frame["timeouts"].to_numpy(),
            "errors": frame["errors"].to_numpy(),
            "failure_rate": failure_rate.astype("float64"),
            "p50_ms": frame["p50_ms"].to_numpy(dtype="float64"),
            "p95_ms": frame["p95_ms"].to_numpy(dtype="float64"),
            "p99_ms": frame["p99_ms"].to_numpy(dtype="float64"),
            "max_ms": frame["max_ms"].to_numpy(dtype="float64"),
        }
    )
    return out


# --- machine output (formatting: oasis_ops.trials.records) ----------------------------------------
def _utc_stamp(value: Any) -> pd.Timestamp:
    import pandas as pd

    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def machine_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows of a to_grid() frame (keys OUTPUT_COLUMNS): minute as ISO 8601 UTC
    ('...Z'), NaN as None, latencies to 0.01 ms."""
    records = []
    for row in frame.itertuples(index=False):
        records.append(
            {
                "minute": _utc_stamp(row.minute).strftime(STAMP_FORMAT),
                "trials": int(row.trials),
                "ok": int(row.ok),
                "timeouts": int(row.timeouts),
                "errors": int(row.errors),
                "failure_rate": rate(row.failure_rate),
                **{column: latency_ms(getattr(row, column)) for column in LATENCY_COLUMNS},
            }
        )
    return records


__all__ = ["AGG_COLUMNS", "LATENCY_COLUMNS", "OUTPUT_COLUMNS", "RollupCache", "empty_aggregates", "latency_ms",
           "machine_records", "records_csv", "to_grid", "to_rows"]  # fmt: skip
