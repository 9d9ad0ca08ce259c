"""Exact percentiles for buckets too full for an in-memory quantile (TrialSource's bounded path).

DuckDB's quantile_cont holds every value of a group; a bucket of millions of trials (a 25-day
bucket of a 100-year range) would need more than the connection's memory_limit (64MB). Here the
same numbers (quantile_cont's linear interpolation) come from three scans, whatever the bucket
sizes: the counts per bucket (sql/trials_bucket_totals.sql), a per-millisecond histogram per
bucket (trials_bucket_histogram.sql, one row per bucket and millisecond), from which the ranks
of each percentile locate their bins, and only the values in those bins (trials_bucket_values.sql).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

KEY_BASE = 100_000_000_000  # bin_ms < 1e11 (valid latencies): key = bucket index * KEY_BASE + bin

Run = Callable[[str, dict[str, Any]], Any]  # (statement, params) -> a DuckDB result


def _ranks(total: int, percentiles: Sequence[float]) -> list[tuple[int, int, float]]:
    """(lower rank, upper rank, fraction) per percentile: linear interpolation, as quantile_cont."""
    out = []
    for q in percentiles:
        position = (total - 1) * q
        lower = int(np.floor(position))
        out.append((lower, min(lower + 1, total - 1), position - lower))
    return out


def exact_percentiles(run: Run, params: dict[str, Any], percentiles: Sequence[float]) -> list[float | None]:
    """Exact quantile_cont percentiles over a range with bounded memory: a per-millisecond
    histogram locates each rank's bin, then only that bin's values are read."""
    hist = run("trials_latency_histogram", params).fetchnumpy()
    bins = np.asarray(hist["bin_ms"], dtype="int64")
    counts = np.asarray(hist["n"], dtype="int64")
    total = int(counts.sum())
    if total == 0:
        return [None for _ in percentiles]
    cumulative = np.cumsum(counts)
    values_by_bin: dict[int, np.ndarray] = {}

    def value_at(rank: int) -> float:
        i = int(np.searchsorted(cumulative, rank, side="right"))
        if i not in values_by_bin:
            lo = int(bins[i])
            rows = run("trials_latency_values", {**params, "bin_lo": float(lo), "bin_hi": float(lo + 1)}).fetchnumpy()
            values_by_bin[i] = np.asarray(rows["latency_ms"], dtype="float64")
        before = int(cumulative[i] - counts[i])
        return float(values_by_bin[i][rank - before])

    result: list[float | None] = []
    for q in percentiles:
        position = (total - 1) * q  # linear interpolation, as quantile_cont and numpy
        lower = int(np.floor(position))
        upper = min(lower + 1, total - 1)
        low_value = value_at(lower)
        result.append(low_value + (value_at(upper) - low_value) * (position - lower))
    return result


def bounded_buckets(run: Run, params: dict[str, Any], from_us: int, width_us: int, percentiles: Sequence[float],
                    columns: Sequence[str]) -> pd.DataFrame:  # fmt: skip
    """Aggregates (`columns`: trials, ok, timeouts, errors, p50_ms, p95_ms, p99_ms, max_ms) of each
    non-empty bucket, indexed by bucket_us. `params` bound the range; `from_us` is bucket-aligned."""
    base = {**params, "width_us": width_us, "from_us": from_us}
    hist = run("trials_bucket_histogram", base).fetchnumpy()
    h_bucket = np.asarray(hist["bucket_us"], dtype="int64")
    h_bin = np.ma.getdata(hist["bin_ms"]).astype("int64")
    h_valid = ~np.ma.getmaskarray(hist["bin_ms"])
    h_outcome = np.asarray(hist["outcome"], dtype=object)
    h_n = np.asarray(hist["n"], dtype="int64")
    h_max: np.ndarray = np.ma.filled(np.ma.asarray(hist["max_ms"], dtype="float64"), np.nan)
    buckets = np.unique(h_bucket)
    starts = np.searchsorted(h_bucket, buckets, side="left")
    ends = np.searchsorted(h_bucket, buckets, side="right")
    totals: dict[str, list[Any]] = {"trials": [], "ok": [], "timeouts": [], "errors": [], "max_ms": []}
    plans: list[tuple[np.ndarray, np.ndarray, int, list[tuple[int, int, float]]] | None] = []
    keys: set[int] = set()
    for n, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        counts_all, outcomes = h_n[lo:hi], h_outcome[lo:hi]
        totals["trials"].append(int(counts_all.sum()))
        for outcome, column in (("ok", "ok"), ("timeout", "timeouts"), ("error", "errors")):
            totals[column].append(int(counts_all[outcomes == outcome].sum()))
        maxima = h_max[lo:hi]
        totals["max_ms"].append(float(np.nanmax(maxima)) if np.isfinite(maxima).any() else np.nan)
        valid = h_valid[lo:hi]
        bins, index_of = np.unique(h_bin[lo:hi][valid], return_inverse=True)  # outcomes of one bin merged
        counts = np.bincount(index_of, weights=counts_all[valid], minlength=len(bins)).astype("int64")
        total = int(counts.sum())
        if total == 0:
            plans.append(None)
            continue
        cumulative = np.cumsum(counts)
        ranks = _ranks(total, percentiles)
        index = (int(buckets[n]) - from_us) // width_us
        for lower, upper, _ in ranks:
            for rank in (lower, upper):
                keys.add(index * KEY_BASE + int(bins[int(np.searchsorted(cumulative, rank, side="right"))]))
        plans.append((bins, cumulative, total, ranks))
    values: dict[int, np.ndarray] = {}
    if keys:
        rows = run("trials_bucket_values", {**base, "keys": sorted(keys)}).fetchnumpy()
        v_bucket = np.asarray(rows["bucket_us"], dtype="int64")
        v_value = np.asarray(rows["latency_ms"], dtype="float64")
        v_key = (v_bucket - from_us) // width_us * KEY_BASE + np.floor(v_value).astype("int64")
        order = np.argsort(v_key, kind="stable")  # by key, each key's values still ascending
        v_key, v_value = v_key[order], v_value[order]
        cuts = np.flatnonzero(np.diff(v_key)) + 1
        for part_keys, part in zip(np.split(v_key, cuts), np.split(v_value, cuts), strict=True):
            if len(part_keys):
                values[int(part_keys[0])] = part
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for n, plan in enumerate(plans):
        found: list[float | None] = [None] * len(percentiles)
        if plan is not None:
            bins, cumulative, _total, ranks = plan
            index = (int(buckets[n]) - from_us) // width_us

            def value_at(rank: int, bins: np.ndarray = bins, cumulative: np.ndarray = cumulative, index: int = index) -> float:
                i = int(np.searchsorted(cumulative, rank, side="right"))
                before = int(cumulative[i - 1]) if i else 0  # values of this bucket in the bins below
                return float(values[index * KEY_BASE + int(bins[i])][rank - before])

            for p, (lower, upper, fraction) in enumerate(ranks):
                low_value = value_at(lower)
                found[p] = low_value + (value_at(upper) - low_value) * fraction
        row = {c: totals[c][n] for c in ("trials", "ok", "timeouts", "errors", "max_ms")}
        row.update({f"p{round(q * 100)}_ms": v for q, v in zip(percentiles, found, strict=True)})
        for c in columns:
            out[c].append(row[c])
    import pandas as pd

    frame = pd.DataFrame(out, index=pd.Index(buckets, dtype="int64", name="bucket_us"))
    for c in columns:
        frame[c] = frame[c].astype("int64" if c in ("trials", "ok", "timeouts", "errors") else "float64")
    return frame
