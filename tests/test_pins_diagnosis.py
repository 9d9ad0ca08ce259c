"""Pins for the diagnosis, the watchdog's Stopping clock, the Live memory series and the flash log.

Each test fails when one of these (mutation-testing survivors) is planted:
1. the watchdog counting the stuck time from Ollama's latest `stopping_since` (which restarts
   with every re-sent `keep_alive: 0`) instead of the start of the Stopping episode, whether
   the episode is seen in successive polls or rebuilt from the sampler's samples after a restart;
2. the cold-start or memory-pressure finding confirmed on one signal (each needs two agreeing);
3. cold start refuted while the sampler's samples have a hole over the window;
4. an incident window opened by one failure in a busy minute (or by one failing minute), or a
   p95 departure judged without the MAD scale (1.4826 x MAD) on a widely spread run;
5. the Live window's free memory per bucket not the bucket's minimum (a dip maxed away);
6. the first flash-attention statement of a server log winning over a later one (after an Ollama
   restart with another setting), in the resolver and through the diagnosis' ingested log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from oasis_ops.actions import ActionContext, ActionResult
from oasis_ops.diagnosis.findings import (
    Finding,
    Telemetry,
    WindowContext,
    check_cold_start,
    check_memory_pressure,
    flash_setting,
)
from oasis_ops.diagnosis.windows import IncidentWindow, baseline_of, departures, find_windows
from oasis_ops.logs.ingest import ingest_logs
from oasis_ops.logs.parse import flash_attention_statements
from oasis_ops.probes import ModelSnapshot
from oasis_ops.probes.flash import model_flash_attention
from oasis_ops.probes.ollama import ModelStatus, OllamaClient
from oasis_ops.sampler.window import live_window
from oasis_ops.settings import Settings, load_settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials import TrialSource
from oasis_ops.trials.writer import TrialWriter
from oasis_ops.watchdog import Watchdog, WatchdogPolicy

MODEL = "gemma4:e4b"
PID = 4242
CREATE_TIME = 1_700_000_000.25
T0 = datetime(2025, 11, 20, 10, 0, tzinfo=UTC)
GB = 1_000_000_000


def base_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(env={}).replace(snapshot_dir=str(tmp_path / "snap"), ollama_models=str(tmp_path / "models"),
                                         **overrides)  # fmt: skip


# --- 1. the watchdog counts from the Stopping episode ------------------------------------------
def snapshot(now: datetime, ollama_since: datetime) -> ModelSnapshot:
    """/api/ps's Stopping entry as Ollama reports it at `now`: its clock starts at `ollama_since`."""
    status = ModelStatus(name=MODEL, model=MODEL, digest="d" * 64, size_bytes=9 * GB, size_vram_bytes=9 * GB,
                         context_length=4096, expires_at=ollama_since, state="stopping", stopping_since=ollama_since,
                         stopping_for_s=(now - ollama_since).total_seconds(), processor="100% GPU", cpu_percent=0.0,
                         gpu_percent=100.0, keep_alive_forever=False)  # fmt: skip
    return ModelSnapshot(ts=now, status=status, blob_path=None, runner_pid=PID, runner_create_time=CREATE_TIME,
                         runner_rss_bytes=10 * GB, runner_cpu_percent=99.0, runner_threads=12, runner_cmdline=None,
                         runner_variant=None, runner_port=None, note=None)  # fmt: skip


def dry_run_watchdog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sidecar: Sidecar | None = None,
                     ) -> tuple[Watchdog, list[dict[str, Any]]]:  # fmt: skip
    """A dry-run watchdog (no trial completes) whose hard_kill only records what it was asked."""
    settings = base_settings(tmp_path, watchdog=True, watchdog_dry_run=True, watchdog_stopping_s=30.0)
    ctx = ActionContext(settings=settings, client=OllamaClient("http://127.0.0.1:9"), sidecar=sidecar)
    calls: list[dict[str, Any]] = []

    def fake_kill(ctx: ActionContext, model: str, pid: int | None = None, **kwargs: Any) -> ActionResult:
        calls.append({"model": model, "pid": pid, **kwargs})
        return ActionResult("hard_kill", model, "dry_run", "dry run: would SIGKILL", {"trigger": kwargs.get("trigger")},
                            0.0, {"pid": pid}, "watchdog")  # fmt: skip

    monkeypatch.setattr("oasis_ops.watchdog.hard_kill", fake_kill)
    dog = Watchdog(ctx, completed_since=lambda since: 0, policy=WatchdogPolicy.from_settings(settings))
    return dog, calls


def test_watchdog_counts_the_episode_while_ollama_restarts_its_stopping_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dog, calls = dry_run_watchdog(tmp_path, monkeypatch)
    episode_start = T0 - timedelta(seconds=2)
    acted_at = []
    for step in range(13):  # a poll every 5 s for a minute; the harness re-sends keep_alive 0 each time
        now = T0 + timedelta(seconds=5 * step)
        results = dog.tick(now, models=[snapshot(now, now - timedelta(seconds=2))])
        acted_at += [now] * len(results)
    dog.close()
    # by Ollama's clock it was never Stopping for more than 2 s; the episode passed 30 s at T0+30
    assert acted_at == [T0 + timedelta(seconds=30)], acted_at
    [call] = calls
    assert (call["model"], call["pid"], call["dry_run"]) == (MODEL, PID, True)
    assert call["trigger"]["stopping_for_s"] == pytest.approx(32.0)
    assert call["trigger"]["key"].endswith(episode_start.isoformat())


def test_restarted_watchdog_takes_the_episode_from_the_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck_since = T0 - timedelta(minutes=3)
    rows = []
    t = stuck_since
    while t < T0:  # the sampler saw the same runner Stopping for 3 min, Ollama's clock reset every 20 s
        reset = stuck_since + timedelta(seconds=20 * int((t - stuck_since).total_seconds() // 20))
        rows.append({"ts": t, "model": MODEL, "state": "stopping", "expires_at": reset, "stopping_since": reset,
                     "size_bytes": 9 * GB, "size_vram_bytes": 9 * GB, "runner_pid": PID,
                     "runner_create_time": CREATE_TIME, "runner_cpu_percent": 99.0})  # fmt: skip
        t += timedelta(seconds=2)
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    sidecar.write_batch({"model_samples": rows})
    dog, calls = dry_run_watchdog(tmp_path, monkeypatch, sidecar)
    [result] = dog.tick(T0, models=[snapshot(T0, T0 - timedelta(seconds=3))])  # Ollama: Stopping for 3 s
    dog.close()
    assert result.action == "hard_kill" and len(calls) == 1
    assert calls[0]["trigger"]["stopping_for_s"] == pytest.approx(180.0)


# --- 2, 3. cold start and memory pressure: several agreeing signals; no refutation over a hole ---
WINDOW_START, WINDOW_END = T0, T0 + timedelta(minutes=5)
BLOB = "/root/.ollama/models/blobs/sha256-" + "c" * 64


def window(start: datetime = WINDOW_START, end: datetime = WINDOW_END, model: str | None = MODEL) -> IncidentWindow:
    return IncidentWindow(start=start, end=end, trials=100, failures=30, timeouts=30, failure_rate=0.3,
                          p50_ms_during=9000.0, p95_ms_during=60_000.0, max_ms_during=60_000.0,
                          before_start=start - timedelta(hours=2), trials_before=1000, failure_rate_before=0.0,
                          p50_ms_before=4000.0, p95_ms_before=6000.0, departing_minutes=5, model=model)  # fmt: skip


def context(tmp_path: Path, tables: dict[str, list[dict[str, Any]]]) -> WindowContext:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    sidecar.write_batch({name: rows for name, rows in tables.items() if rows})
    telemetry = Telemetry.load(sidecar, WINDOW_START - timedelta(hours=2), WINDOW_END + timedelta(hours=1))
    return WindowContext(window(), telemetry, base_settings(tmp_path), model=MODEL)


def model_rows(spans: Iterable[tuple[datetime, datetime]], pid_after: datetime | None = None) -> list[dict[str, Any]]:
    """/api/ps samples every 10 s over each [from, to): the model loaded, all on the GPU; its
    runner pid changes at `pid_after` (a respawn)."""
    rows = []
    for lo, hi in spans:
        t = lo
        while t < hi:
            pid = PID + 1 if pid_after is not None and t >= pid_after else PID
            rows.append({"ts": t, "model": MODEL, "state": "loaded", "expires_at": t + timedelta(minutes=5),
                         "size_bytes": 9 * GB, "size_vram_bytes": 9 * GB, "processor": "100% GPU",
                         "runner_pid": pid, "runner_create_time": CREATE_TIME, "runner_cpu_percent": 20.0})  # fmt: skip
            t += timedelta(seconds=10)
    return rows


WHOLE = [(WINDOW_START - timedelta(minutes=10), WINDOW_END + timedelta(minutes=5))]
LOAD_LINES = [  # one load of the model in the window: its spawn, load request and `started in` line
    {"ts": T0 + timedelta(minutes=2), "kind": "runner_start", "msg": "starting runner",
     "detail": {"load_id": "L7", "model": BLOB, "cmd": f"ollama runner --model {BLOB} --port 51000"}},
    {"ts": T0 + timedelta(minutes=2, seconds=1), "kind": "load_request", "msg": "load request",
     "detail": {"load_id": "L7", "model": BLOB}},
    {"ts": T0 + timedelta(minutes=2, seconds=14), "kind": "runner_started", "msg": "llama runner started in 13.20 seconds",
     "detail": {"load_id": "L7", "model": BLOB, "seconds": 13.2}},
]  # fmt: skip
GONE = [{"ts": T0 + timedelta(minutes=1, seconds=55), "kind": "gone", "model": MODEL, "detail": {}}]


def timings(encode_during_ms: float) -> list[dict[str, Any]]:
    """llama-server timing rows: the image encoder 40 ms before the window, `encode_during_ms` in it."""
    rows = []
    for i in range(6):
        rows.append({"ts": T0 - timedelta(minutes=30 - i), "eval_ms": 900.0, "eval_tokens": 100, "image_encode_ms": 40.0})
        rows.append({"ts": T0 + timedelta(seconds=30 + 20 * i), "eval_ms": 900.0, "eval_tokens": 100,
                     "image_encode_ms": encode_during_ms})  # fmt: skip
    return rows


COLD_SIGNALS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "gone": {"events": GONE},
    "respawn": {"model_samples": model_rows(WHOLE, pid_after=T0 + timedelta(minutes=3))},
    "loads": {"log_events": LOAD_LINES},
    "cold encoder": {"log_timings": timings(900.0)},
}


def cold_tables(*signals: str) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {"model_samples": model_rows(WHOLE)}
    for name in signals:
        tables.update(COLD_SIGNALS[name])
    return tables


@pytest.mark.parametrize("signal", list(COLD_SIGNALS))
def test_cold_start_is_not_confirmed_on_one_signal(tmp_path: Path, signal: str) -> None:
    ctx = context(tmp_path, cold_tables(signal))
    assert check_cold_start(ctx) is None  # partial evidence: neither confirmed nor refuted


@pytest.mark.parametrize("signals", [("gone", "loads"), ("respawn", "cold encoder"), ("loads", "cold encoder")])
def test_cold_start_is_confirmed_by_two_agreeing_signals(tmp_path: Path, signals: tuple[str, str]) -> None:
    finding = check_cold_start(context(tmp_path, cold_tables(*signals)))
    assert isinstance(finding, Finding) and finding.status == "confirmed"


def test_cold_start_is_refuted_when_the_samples_cover_the_window(tmp_path: Path) -> None:
    finding = check_cold_start(context(tmp_path, {"model_samples": model_rows(WHOLE), "log_timings": timings(42.0)}))
    assert finding is not None and finding.status == "refuted"


@pytest.mark.parametrize("spans", [
    [(WINDOW_START - timedelta(minutes=10), T0 + timedelta(minutes=1)), (T0 + timedelta(minutes=4), WINDOW_END)],
    [(T0 + timedelta(minutes=2), WINDOW_END + timedelta(minutes=5))],  # the sampler started late
    [(WINDOW_START - timedelta(minutes=10), T0 + timedelta(minutes=3))],  # ... or stopped early
], ids=["hole", "late start", "early stop"])  # fmt: skip
def test_cold_start_is_not_refuted_over_a_sampler_gap(tmp_path: Path, spans: list[tuple[datetime, datetime]]) -> None:
    # the model was listed, loaded and warm in every sample there is, but the sampler was not
    # running for minutes of the window: absence of evidence is not evidence
    ctx = context(tmp_path, {"model_samples": model_rows(spans), "log_timings": timings(42.0)})
    assert len(Telemetry.between(ctx.telemetry.models, WINDOW_START, WINDOW_END)) >= 3
    assert check_cold_start(ctx) is None


def host_rows(signals: Iterable[str]) -> list[dict[str, Any]]:
    """Host samples every minute over the hour before the window and the window: free memory
    20 GB -> 0.5 GB (of 32 GB) near the window, swap-outs +60,000 pages, pressure 75."""
    on = set(signals)
    rows = []
    start = WINDOW_START - timedelta(minutes=60)
    for i in range(66):
        t = start + timedelta(minutes=i)
        near = t >= WINDOW_START - timedelta(minutes=5)
        free = 0.5 * GB if ("free" in on and near) else 20 * GB
        rows.append({"ts": t, "mem_total_bytes": 32 * GB, "mem_free_bytes": int(free), "mem_available_bytes": int(free),
                     "swapouts": 1_000 + (1_000 * i if "swap" in on else 0), "swap_used_bytes": 0,
                     "pressure": 75.0 if ("pressure" in on and near) else 10.0, "source": "linux:/proc"})  # fmt: skip
    return rows


@pytest.mark.parametrize("signal", ["free", "swap", "pressure"])
def test_memory_pressure_is_not_confirmed_on_one_signal(tmp_path: Path, signal: str) -> None:
    assert check_memory_pressure(context(tmp_path, {"host_samples": host_rows([signal])})) is None


@pytest.mark.parametrize("signals", [("free", "swap"), ("swap", "pressure"), ("free", "pressure"), ("free", "swap", "pressure")])
def test_memory_pressure_is_confirmed_by_two_agreeing_signals(tmp_path: Path, signals: tuple[str, ...]) -> None:
    finding = check_memory_pressure(context(tmp_path, {"host_samples": host_rows(signals)}))
    assert finding is not None and finding.status == "confirmed" and finding.values["signals"] == len(signals)


# --- 4. incident windows: failure-rate threshold and the MAD scale ------------------------------
def rollup(p95: list[float], failures: list[int], trials: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "minute": [T0 + timedelta(minutes=i) for i in range(len(p95))],
        "trials": trials, "ok": [n - f for n, f in zip(trials, failures, strict=True)],
        "timeouts": failures, "errors": [0] * len(p95),
        "failure_rate": [f / n for n, f in zip(trials, failures, strict=True)],
        "p50_ms": [v * 0.7 for v in p95], "p95_ms": p95,
    })  # fmt: skip


def test_one_failure_is_not_a_departure() -> None:
    n = 30
    fails, trials = [0] * n, [100] * n
    fails[10] = 1  # one failed trial in a busy minute: 1%, far below incident_min_failure_rate
    fails[15] = 2  # two: 2%, still far below it (and too few to be far above the baseline)
    trials[20], fails[20] = 1, 1  # the only trial of a quiet minute failed: 100%, but one failure
    frame = rollup([6000.0] * n, fails, trials)
    flags, reasons = departures(frame, baseline_of(frame, 6.0, 0.2), 0.2)
    assert not flags.any(), reasons


def write_trials(path: Path, minutes: list[tuple[int, int, float]]) -> None:
    """Per minute (trials, failures, latency of the ok ones in ms), spread over the minute."""
    with TrialWriter(path, background=False, batch_size=100_000) as writer:
        trial_id = 0
        for m, (n, failed, latency) in enumerate(minutes):
            for k in range(n):
                trial_id += 1
                ts = T0 + timedelta(minutes=m, seconds=k * 60 / n)
                ok = k >= failed
                writer.add(trial_id=trial_id, run_id="r", model=MODEL, started_at=ts, finished_at=ts,
                           latency_ms=latency if ok else None, status="ok" if ok else "timeout", error=None)  # fmt: skip


def scan_windows(tmp_path: Path, minutes: list[tuple[int, int, float]]) -> list[IncidentWindow]:
    tmp_path.mkdir(exist_ok=True)
    db = tmp_path / "trials.duckdb"
    write_trials(db, minutes)
    settings = base_settings(tmp_path)
    assert (settings.incident_threshold_sigma, settings.incident_min_failure_rate) == (6.0, 0.2)
    with TrialSource(db, settings) as source:
        return find_windows(source, settings).windows


def test_one_failure_in_a_busy_minute_opens_no_window(tmp_path: Path) -> None:
    minutes = [(40, 0, 4000.0)] * 30
    minutes[12] = (40, 1, 4000.0)  # 1 of 40 failed (2.5%)
    minutes[20] = (4, 2, 4000.0)  # one failing minute, 2 failures: departs, but is no window alone
    assert scan_windows(tmp_path, minutes) == []
    # the control: two failing minutes in a row are one
    minutes[21] = (4, 2, 4000.0)
    [found] = scan_windows(tmp_path / "again", minutes)
    assert (found.start, found.end) == (T0 + timedelta(minutes=20), T0 + timedelta(minutes=22))


# A widely spread run: per-minute p95 evenly from 500 to 1500 ms (median 1000, MAD 250, so the
# robust sigma is 1.4826 x 250 = 371 ms and the 6-sigma threshold ~3.2 s). 2.9 s is within it;
# judged on the raw MAD (threshold 2.5 s) or the raw distance from the median (1.5 s), it departs.
SPREAD = [500.0 + 10.0 * i for i in range(101)]


def test_p95_departure_is_judged_in_mad_sigmas() -> None:
    p95 = [*SPREAD[:50], 2900.0, 2900.0, *SPREAD[50:], 4000.0, 4000.0]
    frame = rollup(p95, [0] * len(p95), [20] * len(p95))
    base = baseline_of(frame, 6.0, 0.2)
    assert base.p95_median_ms == pytest.approx(1010.0, abs=15)
    assert base.p95_sigma_ms == pytest.approx(1.4826 * 250, rel=0.05)
    flags, reasons = departures(frame, base, 0.2)
    assert list(np.flatnonzero(flags)) == [len(p95) - 2, len(p95) - 1], reasons


def test_no_window_within_six_mad_sigmas_on_a_spread_run(tmp_path: Path) -> None:
    minutes = [(5, 0, v) for v in SPREAD[:50]] + [(5, 0, 2900.0)] * 2 + [(5, 0, v) for v in SPREAD[50:]]
    assert scan_windows(tmp_path, minutes) == []
    minutes[50:52] = [(5, 0, 4000.0)] * 2  # the control: beyond 6 sigmas it is a window
    [found] = scan_windows(tmp_path / "again", minutes)
    assert (found.start, found.departing_minutes) == (T0 + timedelta(minutes=50), 2)


# --- 5. the Live window shows each bucket's lowest free memory ---------------------------------
def test_live_window_keeps_a_dip_inside_a_bucket(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    rows = []
    for second in range(0, 60, 2):  # a sample every 2 s for a minute: 8 GB free, 0.3 GB at 00:24
        dip = second == 24
        free = int(0.3 * GB) if dip else 8 * GB
        rows.append({"ts": T0 + timedelta(seconds=second), "mem_total_bytes": 32 * GB, "mem_free_bytes": free,
                     "mem_available_bytes": free + GB, "page_size": 16384, "pages_free": free // 16384,
                     "swapouts": 500, "pressure": 90.0 if dip else 5.0, "source": "linux:/proc"})  # fmt: skip
    sidecar.write_batch({"host_samples": rows})
    live = live_window(sidecar, T0, T0 + timedelta(minutes=1), bucket_s=10)
    tele = live.telemetry.set_index("minute")
    bucket = tele.loc[pd.Timestamp(T0 + timedelta(seconds=20))]
    assert bucket["mem_free_bytes"] == int(0.3 * GB)
    assert bucket["mem_available_bytes"] == int(0.3 * GB) + GB
    assert bucket["pages_free"] == int(0.3 * GB) // 16384
    assert bucket["pressure"] == 90.0
    others = tele.drop(index=pd.Timestamp(T0 + timedelta(seconds=20)))
    assert (others["mem_free_bytes"] == 8 * GB).all() and len(others) == 5


# --- 6. the latest flash-attention statement wins ----------------------------------------------
def restarted_log(fixtures_dir: Path) -> list[str]:
    """The write-up's server.log start (flash attention on: config true, load FlashAttention:
    Enabled), then Ollama restarted with OLLAMA_FLASH_ATTENTION=false and the model loaded again."""
    first = (fixtures_dir / "ollama" / "server.log").read_text().splitlines()[:4]
    assert "OLLAMA_FLASH_ATTENTION:true" in first[0] and "FlashAttention:Enabled" in first[3]

    def later(line: str) -> str:
        return line.replace("2025-11-20T08:5", "2025-11-20T09:3")

    again = [later(first[0].replace("OLLAMA_FLASH_ATTENTION:true", "OLLAMA_FLASH_ATTENTION:false")), later(first[1]),
             later(first[2]).replace("--port 53312", "--port 53999"),
             later(first[3].replace("FlashAttention:Enabled", "FlashAttention:Disabled"))]  # fmt: skip
    return first + again


def test_the_latest_flash_statement_wins_after_a_restart(fixtures_dir: Path) -> None:
    statements = flash_attention_statements(restarted_log(fixtures_dir))
    assert [s["value"] for s in statements if s["source"] in ("server config", "load request")] == [True, True, False, False]
    blob = next(s["model"] for s in statements if s.get("model"))
    got = model_flash_attention(serve_environ=None, blob=blob, version="0.20.4", architecture="gemma4", statements=statements)
    assert (got.value, got.source) == ("off", "server log") and "FlashAttention:Disabled" in got.detail


def test_the_latest_llama_cpp_resolution_wins() -> None:
    blob = "/home/u/.ollama/models/blobs/sha256-" + "a" * 64
    cmd = ["/usr/lib/ollama/llama-server", "--model", blob, "--port", "41000", "--flash-attn", "auto"]
    spawn = (f'time=2026-09-02T16:5{{}}:34.600Z level=INFO source=llama_server.go:433 msg="starting llama-server" '
             f'cmd="{" ".join(cmd)}"')  # fmt: skip
    log = [spawn.format(1), "llama_context: flash_attn    = enabled", spawn.format(8), "llama_context: flash_attn    = disabled"]
    got = model_flash_attention(runner_cmdline=cmd, version="0.32.15", statements=flash_attention_statements(log))
    assert (got.value, got.setting) == ("off", "auto") and "disabled" in got.detail


def test_diagnosis_reads_the_latest_flash_statement_from_the_ingested_log(tmp_path: Path, fixtures_dir: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(restarted_log(fixtures_dir)) + "\n")
    sidecar_path = tmp_path / "trials.ops.duckdb"
    ingest_logs(sidecar_path, server_logs=[log], utc_offset="+01:00")
    end = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)  # 10:00 local: after both runs
    telemetry = Telemetry.load(Sidecar(sidecar_path), end - timedelta(hours=2), end)
    ctx = WindowContext(window(end - timedelta(minutes=5), end, None), telemetry, base_settings(tmp_path))
    on, where = flash_setting(ctx)
    assert on is False and "FlashAttention:Disabled" in where, where


@pytest.mark.parametrize(("rows", "expected"), [
    ([], False),  # no host samples
    ([{"source": "macos:vm_stat", "page_size": 16384}], True),  # Apple Silicon pages are 16 KiB
    ([{"source": "macos:vm_stat", "page_size": 4096}], False),  # an Intel Mac
    ([{"source": "linux:/proc", "page_size": 16384}], False),  # a 16 KiB-page Linux is not a Mac
    ([{"source": "linux:/proc", "page_size": 4096}, {"source": "macos:vm_stat", "page_size": "16384"}], True),  # text, mixed
    ([{"page_size": 16384}], False),  # no source column
])  # fmt: skip
def test_apple_silicon_is_told_from_macos_samples_with_16k_pages(rows: list[dict[str, Any]], expected: bool) -> None:
    from oasis_ops.diagnosis.checks.context import apple_silicon

    assert apple_silicon(pd.DataFrame(rows)) is expected


def test_finding_as_dict_rounds_confidence_and_makes_values_json(tmp_path: Path) -> None:
    import json

    from oasis_ops.diagnosis.checks.context import Finding

    when = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)
    finding = Finding("memory_pressure", "confirmed", 0.8765, ["e"], "do it",
                      {"at": when, "n": np.int64(3), "nan": float("nan"), "inf": float("inf"), "np_nan": np.float64("nan"),
                       "nested": {"t": pd.Timestamp(when), "xs": (np.float64(1.5), None)}})  # fmt: skip
    d = finding.as_dict()
    assert d == {"id": "memory_pressure", "title": finding.title, "status": "confirmed", "confidence": 0.88, "evidence": ["e"],
                 "values": {"at": "2025-11-20T17:58:00+00:00", "n": 3, "nan": None, "inf": None, "np_nan": None,
                            "nested": {"t": "2025-11-20T17:58:00+00:00", "xs": [1.5, None]}}, "action": "do it"}  # fmt: skip
    assert finding.title and json.loads(json.dumps(d)) == d


# --- 7. the Stopping deadlock: its episode, its evidence and its confidence -----------------------
def stopping_rows(since: datetime, seconds: int, *, cpu: float = 99.0, expires_later_s: int = 0,
                  then_loaded: bool = False, first_sample_s: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """/api/ps samples every 10 s over `seconds` of Stopping from `since` (Ollama's clock may have
    restarted: expires_at later than stopping_since; the sampler may first see it later),
    optionally loaded again after it."""
    rows = [{"ts": since + timedelta(seconds=s), "model": MODEL, "state": "stopping", "stopping_since": since,
             "expires_at": since + timedelta(seconds=expires_later_s), "size_bytes": 9 * GB, "size_vram_bytes": 9 * GB,
             "runner_pid": PID, "runner_create_time": CREATE_TIME, "runner_cpu_percent": cpu, "runner_rss_bytes": 10 * GB}
            for s in range(first_sample_s, seconds + 1, 10)]  # fmt: skip
    if then_loaded:
        rows.append({**rows[-1], "ts": since + timedelta(seconds=seconds + 10), "state": "loaded", "stopping_since": None})
    return rows


def test_a_busy_runner_stopping_past_the_limit_is_a_deadlock_with_its_evidence(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.checks.stopping import check_stopping_deadlock, stopping_episodes

    since = WINDOW_START + timedelta(minutes=1)
    def evict_at(offset_s: int, by: str) -> dict[str, Any]:
        return {"ts": since + timedelta(seconds=offset_s), "action": "evict", "target": MODEL, "outcome": "stuck",
                "requested_by": by, "params": "{}", "detail": "{}", "duration_ms": 1.0}  # fmt: skip

    # the sampler first saw it 30 s in; the episode starts at Ollama's stopping_since, not its later expiry
    samples = stopping_rows(since, 120, expires_later_s=20, then_loaded=True, first_sample_s=30)
    late = context(tmp_path / "late", {"model_samples": samples, "actions": [evict_at(90, "cli")]})
    found_late = check_stopping_deadlock(late)
    assert found_late is not None and not any("soft evict" in e for e in found_late.evidence)  # after: not its cause
    ctx = context(tmp_path, {"model_samples": samples, "actions": [evict_at(-90, "ui"), evict_at(90, "cli")]})
    [episode] = stopping_episodes(ctx.telemetry.models)
    assert (episode.model, episode.since, episode.seconds, episode.still_stopping) == (MODEL, since, 120.0, False)
    finding = check_stopping_deadlock(ctx)  # no trial counter: busy alone (99% CPU), not stalled
    assert finding is not None and finding.confidence == 0.75 and finding.values["trials_completed"] is None
    assert finding.values["stopping_s"] == 120.0 and finding.values["limit_s"] == 30.0
    assert finding.evidence[-1] == f"soft evict (keep_alive 0) requested at {(since - timedelta(seconds=90)):%H:%M:%S} by ui just before"
    # exactly the limit is past it; a next window that starts first cuts the look-ahead
    exact = check_stopping_deadlock(dataclasses.replace(ctx, settings=ctx.settings.replace(watchdog_stopping_s=120.0)))
    assert exact is not None and exact.values["stopping_s"] == 120.0
    cut = dataclasses.replace(ctx, next_start=since + timedelta(seconds=55))
    found = check_stopping_deadlock(cut)
    assert found is not None and found.values["stopping_s"] == 50.0


def test_trials_completing_without_a_pace_before_say_no_pace(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.checks.stopping import check_stopping_deadlock

    since = WINDOW_START + timedelta(minutes=1)
    ctx = context(tmp_path, {"model_samples": stopping_rows(since, 120, cpu=2.0)})
    no_history = dataclasses.replace(ctx, window=dataclasses.replace(ctx.window, trials_before=0),
                                     trials_between=lambda a, b: {"ok": 0})  # fmt: skip
    stalled = check_stopping_deadlock(no_history)  # idle runner, nothing completing: stalled alone
    assert stalled is not None and stalled.confidence == 0.8 and stalled.values["trials_expected"] is None
    assert "0 trials completed while it was Stopping" in stalled.evidence
    assert check_stopping_deadlock(dataclasses.replace(no_history, trials_between=lambda a, b: {"ok": 5})) is None


# --- 8. where the memory numbers come from, said next to them ------------------------------------
def test_memory_is_labelled_real_recorded_or_simulated(tmp_path: Path) -> None:
    import socket

    from oasis_ops.demo.replay import RUN_ID as REPLAY_RUN_ID
    from oasis_ops.diagnosis.incidents import MemorySource, label_memory

    def sidecar_from(host: str | None, name: str) -> Sidecar:
        sidecar = Sidecar(tmp_path / f"{name}.ops.duckdb")
        sidecar.migrate()
        if host is not None:
            sidecar.write_batch({"sampler_status": [{"sampler_id": "s1", "ts": T0, "pid": 1, "host": host, "started_at": T0,
                                                     "last_tick_at": T0, "ticks": 5, "errors": 0, "interval_s": 1.0}]})  # fmt: skip
        return sidecar

    here = socket.gethostname()
    real = label_memory("linux:/proc", sidecar_from(here, "here"), "r1")
    assert real == MemorySource("real", "linux:/proc", here, False)
    assert real.describe() == f"REAL: sampled on this machine ({here}, linux:/proc) by the oasis-ops sampler" and real.badge == "REAL"
    away = label_memory("macos:vm_stat", sidecar_from("eval-mbp.local", "away"), "r1")
    assert away == MemorySource("recorded", "macos:vm_stat", "eval-mbp.local", False)
    assert away.describe() == "RECORDED: sampled during the run on another machine (eval-mbp.local, macos:vm_stat); not this machine's memory"
    replayed = label_memory("macos:vm_stat", sidecar_from("eval-mbp.local", "replayed"), REPLAY_RUN_ID)
    assert replayed.replay and replayed.describe().startswith("RECORDED: the write-up's host memory as reconstructed")
    unknown = label_memory("linux:/proc", sidecar_from(None, "none"), "r1")
    assert (unknown.kind, unknown.host) == ("recorded", None)
    simulated = label_memory("simulated", sidecar_from(here, "sim"), "r1")
    assert simulated.kind == "simulated" and simulated.describe() == (
        "SIMULATED: the demo emulator's simulated host (simulated), not a real machine's memory")


# --- 9. the client timed out, the server did not -------------------------------------------------
def test_client_timeout_needs_the_server_answering_2xx_in_time(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.checks.client_timeout import check_client_timeout

    ctx = context(tmp_path, {})

    def with_logs(timeouts: int, statuses: list[int]) -> WindowContext:
        at = [WINDOW_START + timedelta(seconds=20 * i) for i in range(max(timeouts, len(statuses)))]
        harness = pd.DataFrame({"ts": pd.to_datetime(at[:timeouts], utc=True), "kind": ["timeout"] * timeouts,
                                "latency_ms": [60_000.0] * timeouts})  # fmt: skip
        requests = pd.DataFrame({"ts": pd.to_datetime(at[: len(statuses)], utc=True), "path": ["/api/chat"] * len(statuses),
                                 "status": statuses, "latency_ms": [4_000.0] * len(statuses)})  # fmt: skip
        return dataclasses.replace(ctx, telemetry=dataclasses.replace(ctx.telemetry, harness=harness, requests=requests))

    as_many = check_client_timeout(with_logs(3, [200, 200, 200]))
    assert as_many is not None and as_many.confidence == 0.9  # as many server answers as client timeouts
    fewer = check_client_timeout(with_logs(4, [200, 200, 200]))
    assert fewer is not None and fewer.confidence == 0.75
    assert check_client_timeout(with_logs(3, [200] * 9 + [500, 500])) is None  # 82% answered 2xx: the server failed too
    assert check_client_timeout(with_logs(3, [200] * 8 + [101, 101])) is None  # 1xx is no answer either


def test_a_long_timeline_keeps_its_first_entries_and_its_end() -> None:
    from oasis_ops.diagnosis.report import MAX_TIMELINE, capped_timeline

    entries = [(T0 + timedelta(seconds=i), f"e{i}") for i in range(MAX_TIMELINE + 5)]
    capped = capped_timeline(entries)
    assert len(capped) == MAX_TIMELINE and capped[:-1] == entries[: MAX_TIMELINE - 1] and capped[-1] == entries[-1]
    assert capped_timeline(entries[:MAX_TIMELINE]) == entries[:MAX_TIMELINE]


def test_a_log_axis_spans_the_decades_of_its_positive_values() -> None:
    from oasis_ops.diagnosis.svg import Axis, _domain

    assert _domain([0.0, 0.5, 300.0], Axis("ms", log=True)) == (0.1, 1000)  # 0 has no logarithm: left out
    assert _domain([0.0, -3.0], Axis("ms", log=True)) == (1.0, 10.0)  # nothing positive: one decade
    assert _domain([5.0], Axis("ms", log=True, minimum=1.0, maximum=1.0)) == (1.0, 10.0)  # an empty span widened


def test_an_unstated_flash_setting_on_apple_silicon_is_on(tmp_path: Path) -> None:
    ctx = context(tmp_path, {})  # no server.log: the setting is unknown
    assert flash_setting(ctx)[0] is None
    mac = pd.DataFrame([{"ts": WINDOW_START, "source": "macos:vm_stat", "page_size": 16384}])
    on, where = flash_setting(dataclasses.replace(ctx, telemetry=dataclasses.replace(ctx.telemetry, host=mac)))
    assert on is True and where.endswith("; on Apple Silicon Ollama's defaults turn it on for gemma models")


def test_a_slowdown_without_the_cpu_signature_under_memory_pressure_is_less_sure(tmp_path: Path) -> None:
    """Generation 4x slower with the encoder warm, no runner-CPU signature, flash on (an Apple
    Silicon default): with memory pressure confirmed too, the spill finding says memory alone
    can explain it and is 0.2 less sure; `diagnose` passes that on."""
    from oasis_ops.diagnosis.checks.flash_spill import check_flash_spill
    from oasis_ops.diagnosis.findings import diagnose

    timings = pd.DataFrame([{"ts": at, "eval_ms": per_token * 100, "eval_tokens": 100, "image_encode_ms": 300.0}
                            for at, per_token in [(WINDOW_START - timedelta(minutes=m), 20.0) for m in range(1, 30)]
                            + [(WINDOW_START + timedelta(minutes=m), 80.0) for m in range(0, 5)]])  # fmt: skip
    hosts = [{**row, "source": "macos:vm_stat", "page_size": 16384} for row in host_rows(("free", "swap"))]
    ctx = context(tmp_path, {"host_samples": hosts})
    ctx = dataclasses.replace(ctx, telemetry=dataclasses.replace(ctx.telemetry, timings=timings))
    alone = check_flash_spill(ctx, memory_confirmed=False)
    assert alone is not None and "runner_cpu_percent_median" not in alone.values
    both = check_flash_spill(ctx, memory_confirmed=True)
    assert both is not None and both.confidence == pytest.approx(alone.confidence - 0.2)
    assert both.evidence[-1] == "memory pressure alone can also slow generation: the runner-CPU signature is missing"
    assert both.evidence[-1] not in alone.evidence
    found = {f.id: f for f in diagnose(ctx)}
    assert set(found) >= {"memory_pressure", "flash_attention_cpu_spill"}
    assert found["flash_attention_cpu_spill"].confidence == pytest.approx(both.confidence)


def test_free_memory_counts_free_pages_before_the_free_bytes_column() -> None:
    from oasis_ops.diagnosis.checks.memory import _free_bytes

    host = pd.DataFrame({"pages_free": [1000, None], "page_size": [16384, 16384], "mem_free_bytes": [5, 7]})
    assert list(_free_bytes(host)) == [16_384_000.0, 7.0]


def test_swap_outs_that_stopped_climbing_give_no_recent_pace(tmp_path: Path) -> None:
    rows = host_rows(("free", "swap"))
    flat_from = WINDOW_END - timedelta(minutes=20)
    top = max(r["swapouts"] for r in rows if r["ts"] < flat_from)
    for row in rows:  # climbed for 40 min, then flat for the last 20: no pace over the last 15 min
        if row["ts"] >= flat_from:
            row["swapouts"] = top
    finding = check_memory_pressure(context(tmp_path, {"host_samples": rows}))
    assert finding is not None
    [swap] = [e for e in finding.evidence if e.startswith("Swapouts: ")]
    assert swap.endswith(" min)") and "/min over the last 15 min" not in swap, swap
    assert finding.values["swapouts_per_min_recent"] == 0.0


# --- 10. cold start: which server.log lines are one load, and whose -------------------------------
def log_events(entries: list[tuple[float, str, dict[str, Any]]]) -> pd.DataFrame:
    """server.log rows (seconds after WINDOW_START, kind, detail) as the sidecar's ingest keeps them."""
    return pd.DataFrame({"ts": pd.to_datetime([WINDOW_START + timedelta(seconds=s) for s, _, _ in entries], utc=True),
                         "kind": [k for _, k, _ in entries], "detail": [d for _, _, d in entries]})  # fmt: skip


def test_legacy_started_lines_within_5_s_are_one_load(tmp_path: Path) -> None:
    """Rows ingested before load_id: `started` lines 3 s apart are one load, 10 s later another;
    a load line before any of them belongs to nothing; a repeated line's seconds do not count."""
    from oasis_ops.diagnosis.checks.cold_start import _cold_start_loads

    ctx = dataclasses.replace(context(tmp_path, {}), model=None)
    rows = log_events([(5, "load_request", {}), (10, "runner_started", {"seconds": 0.5}),
                       (13, "runner_started", {"seconds": 9.0, "repeat": True}),
                       (23, "runner_started", {"seconds": 2.5}), (24, "runner_started", {})])  # fmt: skip
    ctx = dataclasses.replace(ctx, telemetry=dataclasses.replace(ctx.telemetry, log_events=rows))
    loads, info = _cold_start_loads(ctx, WINDOW_START, WINDOW_END)
    assert [(x["lines"], x["seconds"]) for x in loads] == [(2, 0.5), (2, 2.5)]
    assert [x["ready"] for x in loads] == [WINDOW_START + timedelta(seconds=13), WINDOW_START + timedelta(seconds=24)]
    assert info == {"load_lines": 4, "other_model_loads": 0, "attribution": "all loads"}


def test_a_load_followed_by_generation_is_not_an_embedding_model_s(tmp_path: Path) -> None:
    """Two blobs load in the window: the model's and another whose first request afterwards is
    /api/embed. A generation request first (any of the paths, even at the very moment the load was
    ready) makes a load not an embedding model's, so its blob is the model's (the only one of the
    hour); the embedding load of another blob is left out and counted."""
    from oasis_ops.diagnosis.checks.cold_start import _cold_start_loads

    mine, other = "/m/blobs/sha256-" + "a" * 64, "/m/blobs/sha256-" + "b" * 64
    base = context(tmp_path, {})
    for gen_path in ("/api/chat", "/api/generate", "/v1/responses"):
        rows = log_events([(10, "runner_start", {"model": mine, "load_id": "l1"}), (12, "runner_started", {"load_id": "l1"}),
                           (40, "runner_start", {"model": other, "load_id": "l2"}), (41, "runner_started", {"load_id": "l2"})])  # fmt: skip
        requests = pd.DataFrame({"ts": pd.to_datetime([WINDOW_START + timedelta(seconds=s) for s in (12, 13, 42)], utc=True),
                                 "path": [gen_path, "/api/embed", "/api/embed"], "status": [200] * 3,
                                 "latency_ms": [1.0] * 3})  # fmt: skip
        ctx = dataclasses.replace(base, telemetry=dataclasses.replace(base.telemetry, log_events=rows, requests=requests))
        loads, info = _cold_start_loads(ctx, WINDOW_START, WINDOW_END)
        assert [x["id"] for x in loads] == ["l1"], (gen_path, loads)  # a request at the very moment it was ready counts
        assert info["other_model_loads"] == 1 and info["attribution"] == "most frequent blob"


def test_cold_start_confidence_grows_with_each_agreeing_signal(tmp_path: Path) -> None:
    two = check_cold_start(context(tmp_path / "two", cold_tables("gone", "loads")))
    three = check_cold_start(context(tmp_path / "three", cold_tables("gone", "loads", "cold encoder")))
    assert two is not None and three is not None
    assert (two.confidence, three.confidence) == (pytest.approx(0.79), pytest.approx(0.91))


def test_a_refutation_without_runner_pids_says_only_what_the_log_lacks(tmp_path: Path) -> None:
    rows = [{**row, "runner_pid": None} for row in model_rows(WHOLE)]
    finding = check_cold_start(context(tmp_path, {"model_samples": rows, "log_timings": timings(42.0)}))
    assert finding is not None and finding.status == "refuted"
    assert finding.evidence[1] == "no runner start or load line in server.log in the window"


def test_small_helpers_of_the_checks() -> None:
    from oasis_ops.diagnosis.checks.context import _ts_sorted
    from oasis_ops.diagnosis.windows import summarize_reasons

    frame = pd.DataFrame({"ts": ["2025-11-20T10:02:00Z", "2025-11-20T10:00:00Z"], "v": [2, 1]})
    ordered = _ts_sorted(frame)
    assert list(ordered["v"]) == [1, 2] and str(ordered["ts"].dt.tz) == "UTC"
    assert summarize_reasons(["p95 9 s; p95 60 s > threshold 20 s", "", "failure rate 50% >= 20%; 10 of 20"]) == (
        "1 minute(s) with a failing rate, e.g. failure rate 50% >= 20%",
        "1 minute(s) with p95 far above the baseline, e.g. p95 60 s > threshold 20 s",
    )


def test_the_model_s_rows_are_filtered_only_when_a_model_is_known(tmp_path: Path) -> None:
    from oasis_ops.diagnosis.checks.context import _model_rows

    rows = model_rows(WHOLE) + [{**r, "model": "other:1b"} for r in model_rows(WHOLE)]
    ctx = context(tmp_path, {"model_samples": rows})
    mine = _model_rows(ctx, WINDOW_START, WINDOW_END)
    every = _model_rows(dataclasses.replace(ctx, model=None), WINDOW_START, WINDOW_END)
    assert set(mine["model"]) == {MODEL} and set(every["model"]) == {MODEL, "other:1b"} and len(every) == 2 * len(mine)
