"""Incident windows: runs of minutes that depart from the run's own baseline.

A minute departs when
- its p95 latency is `incident_threshold_sigma` robust standard deviations above the median of
  the run's per-minute p95 (the deviation is 1.4826 x the median absolute deviation, floored at
  5% of the median so a very steady run does not turn jitter into incidents), and at least 1.5x
  that median; or
- its failure rate reaches `incident_min_failure_rate` (with 2 failures or more); or it is far
  above the run's baseline failure rate (3 failures or more, 10x the baseline and at least 5%).
The baseline failure rate is the rate over the minutes that are not failing outright, so the
outage itself does not raise the bar. Departing minutes closer than `merge_gap_min` minutes are
merged into one window; a window needs 3 failures or 2 departing minutes to count. A run that is
uniformly slow has a high median p95 and therefore no departure: slow is not an incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from oasis_ops.diagnosis.thresholds import (
    DEFAULT_MERGE_GAP_MIN,
    DEFAULT_TIMEOUT_MS,
    FAR_ABOVE_FACTOR,
    FAR_ABOVE_MIN_FAILURES,
    FAR_ABOVE_MIN_RATE,
    MAD_FLOOR_FRACTION,
    MAD_SCALE,
    MIN_FAILING_TRIALS,
    MIN_LATENCY_TRIALS,
    MIN_P95_RATIO,
    WINDOW_MIN_DEPARTING,
    WINDOW_MIN_FAILURES,
)
from oasis_ops.errors import DataError, TooManyBuckets
from oasis_ops.settings import Settings
from oasis_ops.trials import TrialSource
from oasis_ops.trials.timeparse import as_utc

ONE_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Baseline:
    """The run's own normal: what a minute is compared with."""

    minutes: int  # minutes with trials
    p95_median_ms: float | None  # median of the per-minute p95
    p95_sigma_ms: float | None  # robust deviation (1.4826 x MAD, floored)
    failure_rate: float  # over the minutes that are not failing outright
    p95_threshold_ms: float | None  # a minute's p95 above this departs


@dataclass(frozen=True)
class IncidentWindow:
    """One incident window, with the period before it (since the previous window or the range
    start) for comparison."""

    start: datetime
    end: datetime  # exclusive (end of the last departing minute)
    trials: int
    failures: int
    timeouts: int
    failure_rate: float | None
    p50_ms_during: float | None
    p95_ms_during: float | None
    max_ms_during: float | None
    before_start: datetime
    trials_before: int
    failure_rate_before: float | None
    p50_ms_before: float | None
    p95_ms_before: float | None
    departing_minutes: int
    reasons: tuple[str, ...] = ()
    run_id: str | None = None
    model: str | None = None
    # True when over 5% of the window's trials timed out: its p95 is then at least the request
    # timeout (timed-out trials often have no latency), and p95_ms_during says so.
    p95_censored: bool = False

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "trials": self.trials,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "failure_rate": self.failure_rate,
            "p50_ms_before": self.p50_ms_before,
            "p95_ms_before": self.p95_ms_before,
            "p50_ms_during": self.p50_ms_during,
            "p95_ms_during": self.p95_ms_during,
            "max_ms_during": self.max_ms_during,
            "failure_rate_before": self.failure_rate_before,
            "trials_before": self.trials_before,
            "before_start": self.before_start.isoformat(),
            "departing_minutes": self.departing_minutes,
            "p95_censored": self.p95_censored,
            "reasons": list(self.reasons),
        }


@dataclass
class WindowScan:
    """What a scan looked at and found."""

    start: datetime
    end: datetime
    run_id: str | None
    model: str | None
    baseline: Baseline
    rollup: pd.DataFrame  # per minute (see oasis_ops.trials.rollup.OUTPUT_COLUMNS)
    windows: list[IncidentWindow] = field(default_factory=list)
    departing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if np.isnan(out) else out


def baseline_of(rollup: pd.DataFrame, threshold_sigma: float, min_failure_rate: float) -> Baseline:
    trials = rollup["trials"].to_numpy(dtype="int64")
    failures = (rollup["timeouts"] + rollup["errors"]).to_numpy(dtype="int64")
    with_trials = trials > 0
    rates = np.divide(failures, trials, out=np.zeros(len(trials)), where=with_trials)
    # Minutes with enough latencies to judge a p95 (counting ok trials is enough: failures'
    # latencies are often NULL).
    p95 = rollup["p95_ms"].to_numpy(dtype="float64")
    judged = with_trials & ~np.isnan(p95) & (rollup["ok"].to_numpy(dtype="int64") >= MIN_LATENCY_TRIALS)
    not_failing = with_trials & (rates < min_failure_rate)
    base_rate = float(failures[not_failing].sum() / trials[not_failing].sum()) if trials[not_failing].sum() else 0.0
    # The p95 baseline comes from minutes that are not failing outright: an outage must not
    # become its own normal.
    sample = p95[judged & not_failing]
    if sample.size == 0:
        sample = p95[judged]
    if sample.size == 0:
        return Baseline(int(with_trials.sum()), None, None, base_rate, None)
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    sigma = max(MAD_SCALE * mad, MAD_FLOOR_FRACTION * median, 1.0)
    threshold = max(median + threshold_sigma * sigma, MIN_P95_RATIO * median)
    return Baseline(int(with_trials.sum()), median, sigma, base_rate, threshold)


def departures(rollup: pd.DataFrame, baseline: Baseline, min_failure_rate: float) -> tuple[np.ndarray, list[str]]:
    """Per minute: does it depart, and why (readable; "" when it does not)."""
    trials = rollup["trials"].to_numpy(dtype="int64")
    failures = (rollup["timeouts"] + rollup["errors"]).to_numpy(dtype="int64")
    ok = rollup["ok"].to_numpy(dtype="int64")
    p95 = rollup["p95_ms"].to_numpy(dtype="float64")
    flags = np.zeros(len(rollup), dtype=bool)
    reasons: list[str] = []
    far_rate = max(FAR_ABOVE_FACTOR * baseline.failure_rate, FAR_ABOVE_MIN_RATE)
    for i in range(len(rollup)):
        why = []
        if trials[i] > 0:
            rate = failures[i] / trials[i]
            if rate >= min_failure_rate and failures[i] >= MIN_FAILING_TRIALS:
                why.append(f"failure rate {rate:.0%} >= {min_failure_rate:.0%}")
            elif failures[i] >= FAR_ABOVE_MIN_FAILURES and rate >= far_rate:
                why.append(f"failure rate {rate:.0%}, over 10x the baseline {baseline.failure_rate:.2%}")
            threshold = baseline.p95_threshold_ms
            if threshold is not None and ok[i] >= MIN_LATENCY_TRIALS and not np.isnan(p95[i]) and p95[i] > threshold:
                sigmas = (p95[i] - (baseline.p95_median_ms or 0.0)) / (baseline.p95_sigma_ms or 1.0)
                why.append(f"p95 {p95[i] / 1000:.1f} s, {sigmas:.0f} sigma above the run's {(baseline.p95_median_ms or 0) / 1000:.1f} s")
        flags[i] = bool(why)
        reasons.append("; ".join(why))
    return flags, reasons


def minute_numbers(rollup: pd.DataFrame) -> np.ndarray:
    """Each row's minute since the epoch (a sparse rollup skips the empty ones)."""
    return pd.to_datetime(rollup["minute"], utc=True).to_numpy(dtype="datetime64[m]").astype("int64")


def merge(flags: np.ndarray, gap: int, minutes: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Index ranges [i, j] (inclusive) of departing minutes, merged across gaps of <= `gap`
    minutes; `minutes` (minute numbers per row) measures the gaps when rows skip minutes."""
    spans: list[tuple[int, int]] = []
    at = minutes if minutes is not None else np.arange(len(flags))
    for index in np.flatnonzero(flags):
        i = int(index)
        if spans and int(at[i]) - int(at[spans[-1][1]]) - 1 <= gap:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


def summarize_reasons(reasons: list[str]) -> tuple[str, ...]:
    """Per-minute reasons -> a few lines: how many minutes departed for which reason, and the worst."""
    failing = [r for r in reasons if "failure rate" in r]
    slow = [r for r in reasons if "p95" in r]
    out = []
    if failing:
        out.append(f"{len(failing)} minute(s) with a failing rate, e.g. {failing[0].split(';')[0]}")
    if slow:
        out.append(f"{len(slow)} minute(s) with p95 far above the baseline, e.g. {slow[0].split('; ')[-1]}")
    return tuple(out)


def default_range(source: TrialSource, run_id: str | None, model: str | None) -> tuple[datetime, datetime, str | None] | None:
    """The latest run (or the given one) from its first to its last trial; None without trials."""
    if run_id is None:
        run_id = source.latest_run()
    bounds = source.time_bounds(run_id=run_id, model=model)
    if bounds is None:
        trials, untimed = source.trial_counts(run_id=run_id, model=model)
        if untimed:
            raise DataError(f"none of the {trials:,} trials in {source.path} has a start time "
                            f"({source.mapping.time_column} is NULL in every row): nothing to put on a time axis")  # fmt: skip
        return None
    return bounds[0], bounds[1] + timedelta(microseconds=1), run_id


def find_windows(
    source: TrialSource,
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    run_id: str | None = None,
    model: str | None = None,
    merge_gap_min: int = DEFAULT_MERGE_GAP_MIN,
    timeout_ms: float = DEFAULT_TIMEOUT_MS,
) -> WindowScan:
    """Scan [start, end) (default: the latest run) minute by minute for incident windows."""
    if start is None or end is None:
        found = default_range(source, run_id, model)
        if found is None:
            now = datetime.now(UTC)
            empty = source.rollup(now, now)
            return WindowScan(now, now, run_id, model, Baseline(0, None, None, 0.0, None), empty)
        run_start, run_end, run_id = found
        start = as_utc(start) if start is not None else run_start
        end = as_utc(end) if end is not None else run_end
    start, end = as_utc(start), as_utc(end)
    try:
        rollup = source.rollup(start, end, "1m", run_id=run_id, model=model)
    except TooManyBuckets:
        # too wide to grid every minute (start times over decades: a clock bug, a bad import):
        # scan only the minutes that hold trials; gaps are measured in real minutes (merge)
        rollup = source.rollup_sparse(start, end, "1m", run_id=run_id, model=model)
    sigma = float(settings.incident_threshold_sigma)
    min_rate = float(settings.incident_min_failure_rate)
    baseline = baseline_of(rollup, sigma, min_rate) if len(rollup) else Baseline(0, None, None, 0.0, None)
    scan = WindowScan(start, end, run_id, model, baseline, rollup)
    if rollup.empty:
        return scan
    flags, reasons = departures(rollup, baseline, min_rate)
    scan.departing = flags
    minutes = pd.to_datetime(rollup["minute"], utc=True)
    previous_end = start
    for i, j in merge(flags, merge_gap_min, minute_numbers(rollup)):
        part = rollup.iloc[i : j + 1]
        failures = int(part["timeouts"].sum() + part["errors"].sum())
        departing = int(flags[i : j + 1].sum())
        if failures < WINDOW_MIN_FAILURES and departing < WINDOW_MIN_DEPARTING:
            continue
        w_start = minutes.iloc[i].to_pydatetime()
        w_end = minutes.iloc[j].to_pydatetime() + ONE_MINUTE
        during = source.summary(w_start, w_end, run_id=run_id, model=model)
        before_start = max(previous_end, start)
        before = source.summary(before_start, w_start, run_id=run_id, model=model) if w_start > before_start else {}
        p95_during = _num(during["p95_ms"])
        censored = bool(during["trials"]) and int(during["timeouts"]) / int(during["trials"]) > 0.05
        if censored:
            p95_during = max(p95_during or 0.0, timeout_ms)
        scan.windows.append(
            IncidentWindow(
                start=w_start,
                end=w_end,
                trials=int(during["trials"]),
                failures=int(during["failures"]),
                timeouts=int(during["timeouts"]),
                failure_rate=_num(during["failure_rate"]),
                p50_ms_during=_num(during["p50_ms"]),
                p95_ms_during=p95_during,
                max_ms_during=_num(during["max_ms"]),
                before_start=before_start,
                trials_before=int(before.get("trials") or 0),
                failure_rate_before=_num(before.get("failure_rate")),
                p50_ms_before=_num(before.get("p50_ms")),
                p95_ms_before=_num(before.get("p95_ms")),
                departing_minutes=departing,
                reasons=summarize_reasons(reasons[i : j + 1]),
                run_id=run_id,
                model=model,
                p95_censored=censored,
            )
        )
        previous_end = w_end
    return scan


__all__ = ["Baseline", "IncidentWindow", "WindowScan", "baseline_of", "default_range", "departures", "find_windows", "merge"]
