"""Early warning (oasis_ops.earlywarning, `oasis-ops warnings`): lead times on the replayed incident
and the built-in fault scenarios, silence on healthy days, episodes raised once and cleared once,
and causality (a warning raised at t is raised at t from the data known at t alone).

The healthy days are built as host and /api/ps samples and trial minutes in memory (the rules read
arrays); the incident and the scenarios go through the real writers, DuckDB files and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers_scenarios import INCIDENT_WINDOW_START, build_scenario

from oasis_ops.cli import main
from oasis_ops.demo import replay
from oasis_ops.earlywarning.engine import WarningTracker, scan_warnings
from oasis_ops.earlywarning.inputs import WarningInputs, load_inputs
from oasis_ops.earlywarning.trend import theil_sen
from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials import TrialSource

SETTINGS = load_settings(env={})
T0 = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)
GB = 1e9


# -- building healthy days in memory


def day(hours: float = 8.0, *, free: Any = None, swapouts: Any = None, pressure: Any = None, cpu: float = 20.0,
        trials_per_min: int = 10, p50: float = 4100.0, seed: int = 3) -> WarningInputs:  # fmt: skip
    """A run of `hours` with host samples every 10 s, /api/ps every 10 s and trial minutes;
    `free`, `swapouts`, `pressure`: functions of the seconds since T0 (defaults: healthy)."""
    rng = np.random.default_rng(seed)
    seconds = np.arange(0, hours * 3600, 10.0)
    ts = [T0 + timedelta(seconds=float(s)) for s in seconds]
    host = pd.DataFrame({
        "ts": ts,
        "mem_available_bytes": [free(s) if free else 30 * GB * (1 + rng.normal(0, 0.01)) for s in seconds],
        "mem_free_bytes": [20 * GB] * len(seconds),
        "swapouts": [swapouts(s) if swapouts else 0 for s in seconds],
        "pressure": [pressure(s) if pressure else 0.0 for s in seconds],
    })  # fmt: skip
    models = pd.DataFrame({"ts": ts, "model": "m:1", "state": "loaded", "stopping_since": None, "processor": "100% GPU",
                           "runner_cpu_percent": [cpu + rng.normal(0, 2) for _ in seconds]})  # fmt: skip
    minutes = [T0 + timedelta(minutes=i) for i in range(int(hours * 60))]
    p50s = p50 * np.exp(rng.normal(0, 0.05, len(minutes)))
    trials = pd.DataFrame({"minute": minutes, "trials": trials_per_min, "timeouts": 0, "errors": 0, "p50_ms": p50s, "p95_ms": p50s * 1.5})
    return WarningInputs.from_frames(host, models, trials)


def scan(inputs: WarningInputs, hours: float = 8.0) -> list[Any]:
    warnings, _ = scan_warnings(inputs, T0, T0 + timedelta(hours=hours), SETTINGS)
    return warnings


def test_noisy_healthy_day_raises_nothing() -> None:
    rng = np.random.default_rng(11)
    noisy = day(free=lambda s: 30 * GB + rng.normal(0, 2 * GB), cpu=85.0)  # ±2 GB sample to sample, a busy runner
    assert scan(noisy) == []


def test_a_drift_that_would_take_days_raises_nothing() -> None:
    drifting = day(free=lambda s: 40 * GB - s / 3600 * 1 * GB)  # 1 GB an hour: ~40 h to the floor
    assert scan(drifting) == []


def test_one_swap_out_burst_raises_nothing() -> None:
    # 300,000 pages swapped out in one ten-second sample at 12:00, and a 30 s pressure spike
    burst = day(swapouts=lambda s: 300_000 if s >= 3 * 3600 else 0, pressure=lambda s: 60.0 if 3 * 3600 <= s < 3 * 3600 + 30 else 0.0)
    assert scan(burst) == []
    # not vacuous: read without the minimum duration, the same burst is "swapping"
    assert [w.kind for w in scan_warnings(burst, T0, T0 + timedelta(hours=8), SETTINGS.replace(warn_min_duration_s=0.0))[0]] == ["memory_exhaustion"]


def test_a_short_dip_that_recovers_raises_nothing() -> None:
    def dip(s: float) -> float:  # 30 GB -> 10 GB over five minutes at 13:00, back over the next five
        d = s - 4 * 3600
        return 30 * GB - 20 * GB * max(0.0, 1 - abs(d - 300) / 300)

    assert scan(day(free=dip)) == []
    # not vacuous: without the minimum duration the fall's first minutes raise a forecast
    assert scan_warnings(day(free=dip), T0, T0 + timedelta(hours=8), SETTINGS.replace(warn_min_duration_s=0.0))[0]


def test_a_steady_fall_is_raised_once_with_its_eta_and_cleared_once_after_it_stops() -> None:
    def fall(s: float) -> float:  # 30 GB until 12:00, then -0.5 GB/min for 40 min, then flat at 10 GB
        d = s - 3 * 3600
        return 30 * GB - 0.5 * GB / 60 * min(max(d, 0), 2400)

    warnings = scan(day(free=fall))
    assert [w.kind for w in warnings] == ["memory_exhaustion"]
    w = warnings[0]
    start_fall = T0 + timedelta(hours=3)
    # the robust fit follows a new slope once it holds most of its ten-minute window
    assert start_fall < w.first_seen <= start_fall + timedelta(minutes=8)
    assert w.at - w.first_seen >= timedelta(seconds=SETTINGS.warn_min_duration_s)
    assert w.eta is not None and w.eta > w.at and w.evidence["slope_bytes_per_min"] == pytest.approx(-0.5 * GB, rel=0.05)
    assert w.cleared_at is not None and w.cleared_at >= start_fall + timedelta(minutes=40)  # cleared once, after the fall
    assert w.action == "concurrency 1"


def test_a_tick_without_data_clears_nothing() -> None:
    tracker = WarningTracker(SETTINGS)
    inputs = day(free=lambda s: 30 * GB - 0.5 * GB / 60 * max(s - 3600, 0), hours=1.5)
    t = (T0 + timedelta(hours=1, minutes=10)).timestamp()
    while not tracker.active:
        tracker.update(t, inputs)
        t += 30
    # the sampler stops: no sample after this moment, for an hour
    for step in range(120):
        raised, cleared = tracker.update(t + step * 30, inputs.until(t, SETTINGS.warn_trial_lag_s))
        assert cleared == []
    assert len(tracker.episodes) == 1 and tracker.active


def test_theil_sen_ignores_an_outlier_and_calls_noise_flat() -> None:
    x = np.arange(60, dtype=float) * 10
    line = 1000.0 - 2.0 * x
    line[30] = 1e9  # one absurd sample
    trend = theil_sen(x, line)
    assert trend is not None and trend.slope == pytest.approx(-2.0) and trend.high < 0
    noise = np.random.default_rng(5).normal(0, 50, 60)
    flat = theil_sen(x, noise)
    assert flat is not None and flat.low < 0 < flat.high
    assert theil_sen(x[:2], line[:2]) is None and theil_sen(np.zeros(5), np.arange(5.0)) is None


# -- the built-in scenarios and the replay, through the real files


def scan_files(db: Path, start: datetime, end: datetime) -> tuple[list[Any], WarningInputs]:
    settings = SETTINGS.replace(db=str(db))
    source = TrialSource(db, settings)
    try:
        inputs = load_inputs(Sidecar(db.with_name(db.stem + ".ops.duckdb"), settings), source, start, end)
    finally:
        source.close()
    return scan_warnings(inputs, start, end, settings)[0], inputs


def test_memory_pressure_alone_is_seen_coming(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "memory", ["memory"])
    trouble = INCIDENT_WINDOW_START - timedelta(minutes=60)  # the scenario's free memory starts falling
    warnings, _ = scan_files(scen.db, trouble - timedelta(minutes=30), scen.window_end + timedelta(minutes=10))
    first = warnings[0]
    assert first.kind == "memory_exhaustion" and first.first_seen >= trouble
    assert first.at <= INCIDENT_WINDOW_START - timedelta(minutes=10)
    assert [w.kind for w in warnings] == ["memory_exhaustion"]  # one episode through the fall and the swapping


def test_flash_spill_alone_is_named_by_its_signature(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "flash", ["flash"])  # 4x slower from 17:58, no trial fails
    warnings, _ = scan_files(scen.db, INCIDENT_WINDOW_START - timedelta(minutes=60), scen.window_end + timedelta(minutes=10))
    assert [w.kind for w in warnings] == ["latency_drift"]
    w = warnings[0]
    assert INCIDENT_WINDOW_START < w.at <= INCIDENT_WINDOW_START + timedelta(minutes=6)
    assert w.evidence["flash_spill_signature"] is True and w.action == "pause" and "OLLAMA_FLASH_ATTENTION=0" in w.message


def test_a_healthy_slow_run_raises_nothing(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "slow", [], slow=True)
    warnings, _ = scan_files(scen.db, INCIDENT_WINDOW_START - timedelta(minutes=60), scen.window_end + timedelta(minutes=10))
    assert warnings == []


def test_a_stuck_stopping_model_is_raised_at_the_threshold(tmp_path: Path) -> None:
    scen = build_scenario(tmp_path / "deadlock", ["deadlock"])
    warnings, _ = scan_files(scen.db, INCIDENT_WINDOW_START - timedelta(minutes=60), scen.window_end + timedelta(minutes=30))
    stuck = [w for w in warnings if w.kind == "stuck_stopping"]
    assert len(stuck) == 1 and stuck[0].severity == "critical" and stuck[0].action == "recover gemma4:e4b"
    stopping_at = scen.window_end + timedelta(seconds=14)
    limit = stopping_at + timedelta(seconds=SETTINGS.watchdog_stopping_s + 30)  # the threshold, then the next 30 s step
    assert stopping_at + timedelta(seconds=SETTINGS.watchdog_stopping_s) <= stuck[0].at <= limit


@pytest.fixture(scope="module")
def replay_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    replay.write_replay(out, ingest=False)
    return out / replay.TRIALS_FILE


def test_the_replayed_incident_is_seen_coming_from_the_cli(replay_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warnings", "--db", str(replay_db), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    first = rows[0]
    assert set(first) >= {"at", "kind", "severity", "eta", "message", "evidence", "action"}
    first_at = datetime.fromisoformat(first["at"].replace("Z", "+00:00"))
    failing = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)  # the first minute in which most trials fail
    trouble = datetime(2025, 11, 20, 17, 30, tzinfo=UTC)  # the write-up: pressure visible from about 17:30
    assert trouble <= first_at <= failing - timedelta(minutes=10)
    assert first["kind"] == "memory_exhaustion" and first["eta"] is not None and first["action"] == "concurrency 1"
    kinds = [r["kind"] for r in rows]
    assert "stuck_stopping" in kinds and "latency_drift" in kinds
    assert all(datetime.fromisoformat(r["at"].replace("Z", "+00:00")) >= trouble for r in rows)  # no false alarm all day
    assert main(["warnings", "--db", str(replay_db)]) == 0
    text = capsys.readouterr().out
    assert "before the first minute in which most trials failed (17:58)" in text
    assert "action: oasis-ops concurrency 1" in text and "action: oasis-ops recover gemma4:e4b" in text


def test_each_warning_is_raised_from_the_data_known_at_its_time(replay_db: Path) -> None:
    start, end = datetime(2025, 11, 20, 16, 0, tzinfo=UTC), datetime(2025, 11, 20, 18, 30, tzinfo=UTC)
    warnings, inputs = scan_files(replay_db, start, end)
    assert warnings
    for w in warnings:
        known = inputs.until(w.at.timestamp(), SETTINGS.warn_trial_lag_s)
        again, _ = scan_warnings(known, start, w.at + timedelta(seconds=1), SETTINGS)
        same = [a for a in again if (a.kind, a.subject, a.at) == (w.kind, w.subject, w.at)]
        assert same and same[0].message == w.message, w.kind


def test_cli_refuses_bad_ranges_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warnings", "--db", str(tmp_path / "t.duckdb"), "--from", "2025-11-20T09:00"]) == 2
    assert "give both --from and --to" in capsys.readouterr().err
    assert main(["warnings", "--db", str(tmp_path / "t.duckdb"), "--from", "2025-11-20T10:00", "--to", "2025-11-20T09:00"]) == 2
    assert "--to must be after --from" in capsys.readouterr().err


def test_the_report_says_how_early_the_first_warning_came(replay_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "pm.md"
    assert main(["report", "--db", str(replay_db), "--out", str(out)]) == 0
    text = out.read_text()
    assert "First early warning 17:36 UTC, 22 min before the window opened: **memory exhaustion**" in text
    assert "## Early warnings" in text and "| 18:05:00 | stuck_stopping | critical |" in text
