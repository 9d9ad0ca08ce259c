"""Incident windows: robust baseline, departures, merging; a uniformly slow run has none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oasis_ops.diagnosis.windows import Baseline, baseline_of, departures, find_windows, merge
from oasis_ops.settings import load_settings
from oasis_ops.trials import TrialSource
from oasis_ops.trials.writer import TrialWriter

T0 = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)


def rollup(p95: list[float], failures: list[int] | None = None, trials: int = 20) -> pd.DataFrame:
    n = len(p95)
    fails = failures or [0] * n
    return pd.DataFrame({
        "minute": [T0 + timedelta(minutes=i) for i in range(n)],
        "trials": [trials] * n,
        "ok": [trials - f for f in fails],
        "timeouts": fails,
        "errors": [0] * n,
        "failure_rate": [f / trials for f in fails],
        "p50_ms": [v * 0.7 for v in p95],
        "p95_ms": p95,
    })  # fmt: skip


def test_baseline_is_robust_to_the_outage_itself() -> None:
    rng = np.random.default_rng(1)
    p95 = list(6000 + rng.normal(0, 300, 120))
    p95[60:66] = [60_000.0] * 6  # an outage must not become its own normal
    base = baseline_of(rollup(p95), threshold_sigma=6.0, min_failure_rate=0.2)
    assert base.p95_median_ms == pytest.approx(6000, abs=150)
    assert base.p95_sigma_ms == pytest.approx(300, rel=0.35)
    flags, reasons = departures(rollup(p95), base, 0.2)
    assert list(np.flatnonzero(flags)) == list(range(60, 66))
    assert "sigma above" in reasons[60] and reasons[0] == ""


def test_failure_rate_departures_and_far_above_baseline() -> None:
    fails = [0] * 30
    fails[10] = 10  # 50%: over incident_min_failure_rate
    fails[20] = 3  # 15%: below 20% but far above a zero baseline
    fails[25] = 1  # one failure: noise
    frame = rollup([6000.0] * 30, fails)
    base = baseline_of(frame, 6.0, 0.2)
    flags, reasons = departures(frame, base, 0.2)
    assert list(np.flatnonzero(flags)) == [10, 20]
    assert "50% >= 20%" in reasons[10] and "10x the baseline" in reasons[20]


def test_merge_across_small_gaps_only() -> None:
    flags = np.zeros(20, dtype=bool)
    flags[[2, 3, 5, 6, 12]] = True
    assert merge(flags, gap=2) == [(2, 6), (12, 12)]
    assert merge(flags, gap=0) == [(2, 3), (5, 6), (12, 12)]


def test_uniformly_slow_steady_run_never_departs() -> None:
    # Very steady latencies: the MAD floor (5% of the median) keeps jitter from counting.
    frame = rollup([30_000.0 + (i % 3) for i in range(200)])
    base = baseline_of(frame, 6.0, 0.2)
    assert isinstance(base, Baseline) and base.p95_threshold_ms is not None and base.p95_threshold_ms >= 45_000
    flags, _ = departures(frame, base, 0.2)
    assert not flags.any()


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    with TrialWriter(path, background=False, batch_size=100_000) as writer:
        for row in rows:
            writer.add(**row)


def test_find_windows_on_a_real_db(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(600):  # 60 minutes, one trial every 6 s; minutes 30-33 fail
        ts = T0 + timedelta(seconds=6 * i)
        failing = 30 <= i // 10 < 34 and i % 10 != 0
        latency = None if failing else float(4100 * np.exp(0.24 * rng.standard_normal()))
        rows.append({"trial_id": i + 1, "run_id": "r", "model": "m", "started_at": ts, "finished_at": ts,
                     "latency_ms": latency, "status": "timeout" if failing else "ok"})  # fmt: skip
    db = tmp_path / "trials.duckdb"
    _write(db, rows)
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    with TrialSource(db, settings) as source:
        scan = find_windows(source, settings)
    assert len(scan.windows) == 1
    w = scan.windows[0]
    assert (w.start, w.end) == (T0 + timedelta(minutes=30), T0 + timedelta(minutes=34))
    assert (w.trials, w.failures, w.timeouts) == (40, 36, 36)
    assert w.failure_rate == pytest.approx(0.9)
    assert w.trials_before == 300 and w.failure_rate_before == 0
    assert w.p95_ms_before == pytest.approx(np.percentile([r["latency_ms"] for r in rows[:300]], 95))  # type: ignore[misc]
    assert w.p95_censored and w.p95_ms_during == 60_000.0
    d = w.as_dict()
    assert d["start"] == "2025-11-20T09:30:00+00:00" and d["p95_ms_before"] == w.p95_ms_before


def _two_models(db: Path) -> None:
    """Two models in one run: `m` healthy 09:00-10:00, `f` from 09:30 to 10:30 and failing at
    10:10-10:13."""
    rng = np.random.default_rng(4)
    rows = []
    for model, first, count in (("m", T0, 600), ("f", T0 + timedelta(minutes=30), 600)):
        for i in range(count):  # one trial every 6 s
            ts = first + timedelta(seconds=6 * i)
            failing = model == "f" and 40 <= i // 10 < 44 and i % 10 != 0
            latency = None if failing else float(4100 * np.exp(0.24 * rng.standard_normal()))
            rows.append({"trial_id": len(rows) + 1, "run_id": "r", "model": model, "started_at": ts, "finished_at": ts,
                         "latency_ms": latency, "status": "timeout" if failing else "ok"})  # fmt: skip
    _write(db, rows)


def test_find_windows_for_one_model_scans_that_model_only(tmp_path: Path) -> None:
    """Each scan covers its model's own span and compares with its own trials only."""
    db = tmp_path / "trials.duckdb"
    _two_models(db)
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    with TrialSource(db, settings) as source:
        healthy = find_windows(source, settings, model="m")
        failing = find_windows(source, settings, model="f")
    assert healthy.windows == [] and healthy.model == "m"
    assert healthy.start == T0 and healthy.end <= T0 + timedelta(minutes=61)  # m's span, not the run's
    assert failing.start == T0 + timedelta(minutes=30)
    [w] = failing.windows
    assert (w.start, w.end, w.model) == (T0 + timedelta(minutes=70), T0 + timedelta(minutes=74), "f")
    assert w.trials_before == 400  # f's 40 minutes before the window, not m's trials beside them
    flags = np.asarray(failing.departing)
    assert flags.dtype == bool and len(flags) == len(failing.rollup) and flags.sum() == w.departing_minutes


def test_find_windows_on_an_empty_table_is_an_empty_scan(tmp_path: Path) -> None:
    db = tmp_path / "trials.duckdb"
    _write(db, [{"trial_id": 1, "run_id": "r", "model": "m", "started_at": T0, "finished_at": T0, "latency_ms": 1.0,
                 "status": "ok"}])  # fmt: skip
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    with TrialSource(db, settings) as source:
        scan = find_windows(source, settings, run_id="no-such-run")
    assert scan.windows == [] and int(scan.rollup["trials"].sum()) == 0 and scan.run_id == "no-such-run"
    assert scan.baseline == Baseline(0, None, None, 0.0, None) and scan.start == scan.end


def test_a_run_failing_every_minute_has_no_healthy_failure_rate_to_compare_with() -> None:
    frame = rollup([6000.0] * 10, [10] * 10)  # 50% every minute: nothing is "normal"
    base = baseline_of(frame, 6.0, 0.2)
    assert base.failure_rate == 0.0 and base.minutes == 10
    flags, reasons = departures(frame, base, 0.2)
    assert flags.all() and "50% >= 20%" in reasons[0]  # every minute departs on its own rate


def test_the_analysis_of_one_model_spans_that_model_s_trials(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.incidents import analyze

    db = tmp_path / "trials.duckdb"
    _two_models(db)
    settings = load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"))
    analysis = analyze(db, settings, model="m")
    assert analysis.span is not None and analysis.span.start == T0  # m's whole span: a whole run of m
    assert analysis.span.end <= T0 + timedelta(minutes=61)


def test_one_healthy_minute_is_a_baseline_of_its_own() -> None:
    base = baseline_of(rollup([6000.0]), 6.0, 0.2)
    assert (base.minutes, base.p95_median_ms, base.p95_sigma_ms, base.p95_threshold_ms) == (1, 6000.0, 300.0, 9000.0)
    # the sigma floor (5% of the median) and 6 sigmas: 6000 + 6 x 300


def test_one_healthy_minute_among_failing_ones_is_still_the_baseline() -> None:
    base = baseline_of(rollup([6000.0, 60_000.0, 60_000.0], [0, 10, 10]), 6.0, 0.2)
    assert base.p95_median_ms == 6000.0  # not the failing minutes' 60 s
