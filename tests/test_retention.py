"""Sidecar retention: samples older than retain_full_h thinned to one per minute (host memory keeps
each minute's least free memory), older than retain_days deleted; events and actions untouched;
and the sampler applies it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from oasis_ops.settings import load_settings
from oasis_ops.sidecar import Sidecar
from oasis_ops.sidecar.retention import apply_retention

NOW = datetime(2025, 11, 20, 18, 0, tzinfo=UTC)


def test_old_samples_are_thinned_then_dropped_and_dips_survive(tmp_path: Path) -> None:
    from oasis_ops.sampler import Sampler

    path = tmp_path / "t.ops.duckdb"
    Sampler(path, load_settings(env={"OASIS_OPS_OLLAMA_HOST": "http://127.0.0.1:9"})).open().close()  # creates the schema
    con = duckdb.connect(str(path))
    # 1 Hz for 3 minutes, 2 days ago (to thin) and 40 days ago (to drop), and the last 10 minutes (kept)
    for base in (NOW - timedelta(days=2), NOW - timedelta(days=40), NOW - timedelta(minutes=10)):
        for s in range(180):
            free = 1_000 if s == 97 else 5_000 + s  # one dip in the second minute
            con.execute("INSERT INTO host_samples (ts, mem_free_bytes, swapouts, source) VALUES (?, ?, ?, 'linux:/proc')",
                        [base + timedelta(seconds=s), free, s])  # fmt: skip
            con.execute("INSERT INTO model_samples (ts, model, state) VALUES (?, 'm', ?)",
                        [base + timedelta(seconds=s), "stopping" if s == 10 else "loaded"])  # fmt: skip
    con.execute("INSERT INTO events (ts, kind, model, detail) VALUES (?, 'model_loaded', 'm', '{}')", [NOW - timedelta(days=40)])
    con.close()
    # the sampler applies it on its first tick (Ollama is not there: that is counted, not raised)
    sampler = Sampler(path, load_settings(env={"OASIS_OPS_OLLAMA_HOST": "http://127.0.0.1:9"}), clock=lambda: NOW,
                      follow_logs=False, run_watchdog=False)  # fmt: skip
    try:
        sampler.tick()
    finally:
        sampler.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        thinned = con.execute("SELECT mem_free_bytes FROM host_samples WHERE ts < ? ORDER BY ts", [NOW - timedelta(days=1)]).fetchall()
        states = con.execute("SELECT state FROM model_samples WHERE ts < ? ORDER BY ts", [NOW - timedelta(days=1)]).fetchall()
        recent = con.execute("SELECT count(*) FROM host_samples WHERE ts >= ? AND ts < ?", [NOW - timedelta(days=1), NOW]).fetchone()
        events = con.execute("SELECT count(*) FROM events WHERE kind = 'model_loaded'").fetchone()
    finally:
        con.close()
    assert [f for (f,) in thinned] == [5_000, 1_000, 5_120]  # one per minute, the dip kept
    assert [s for (s,) in states] == ["stopping", "loaded", "loaded"]  # a Stopping sample wins its minute
    assert recent == (180,) and events == (1,)
    assert apply_retention(Sidecar(path), NOW, full_h=24, keep_days=30) == {"host_samples": 0, "model_samples": 0, "runner_samples": 0,
                                                                               "gpu_samples": 0}


def test_a_sampler_thread_that_died_is_started_again(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A day-long console must not lose its telemetry to one crash: the launcher's service starts
    the sampler again (at most every RESTART_EVERY_S) and says why it had stopped."""
    import time as _time

    from oasis_ops.sampler import Sampler, service

    said: list[str] = []
    settings = load_settings(env={"OASIS_OPS_DB": str(tmp_path / "trials.duckdb"), "OASIS_OPS_OLLAMA_HOST": "http://127.0.0.1:9",
                                  "OASIS_OPS_SAMPLE_INTERVAL_S": "0.05", "OASIS_OPS_SERVER_LOG": ""})  # fmt: skip
    svc = service.SamplerService(settings, announce=said.append)
    crashes = []

    def crash(self: Sampler, stop: object = None, max_ticks: object = None) -> None:
        crashes.append(1)
        if len(crashes) == 1:
            raise RuntimeError("a bug in the loop")
        original_run(self, stop, max_ticks)  # type: ignore[arg-type]

    original_run = Sampler.run
    monkeypatch.setattr(Sampler, "run", crash)
    svc.start()
    try:
        deadline = _time.monotonic() + 10
        while svc.sampler is not None and svc.sampler.alive and _time.monotonic() < deadline:
            _time.sleep(0.02)
        assert svc.poll() is None and svc.sampler is not None and svc.sampler.alive
        assert said and "RuntimeError: a bug in the loop" in said[-1] and "started again" in said[-1]
    finally:
        svc.stop()
