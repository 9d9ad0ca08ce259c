"""The Live page, headless (streamlit.testing.v1.AppTest), on a prepared trial DB and sidecar.

Fragment timers do not run under AppTest and the refresh is switched off; the page is checked
for what it says about a Stopping model, host memory, the sampler's heartbeat, and its chart.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from oasis_ops.sidecar import Sidecar, heartbeat_row

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
MODEL = "gemma4:e4b"


def write_live_trials(path: Path, now: datetime) -> None:
    """40 minutes of trials up to now: ok for 30 min, then timeouts (a stall)."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE trials (trial_id BIGINT, run_id VARCHAR, model VARCHAR, started_at TIMESTAMP,"
        " finished_at TIMESTAMP, latency_ms DOUBLE, status VARCHAR, error VARCHAR)"
    )
    rows = []
    for i in range(240):
        t = (now - timedelta(minutes=40) + timedelta(seconds=10 * i)).replace(tzinfo=None)
        stalled = i >= 180
        latency = None if stalled else 4100.0 + (i % 7) * 100
        status = "timeout" if stalled else "ok"
        rows.append((i, "run-live", MODEL, t, t + timedelta(seconds=60 if stalled else 4), latency, status, None))
    con.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()


def write_sidecar(path: Path, now: datetime, *, heartbeat_age_s: float, source: str = "linux:/proc",
                  runner_vram: int | None = None, processor: str = "100% GPU") -> None:
    """10 minutes of 1 Hz host samples (free pages falling, swap-outs climbing 600/min at the end),
    a model Stopping since 3m12s ago, its events, and a heartbeat `heartbeat_age_s` old."""
    start = now - timedelta(minutes=10)
    host = []
    swapouts = 0
    for i in range(600):
        ts = start + timedelta(seconds=i)
        if i >= 540:
            swapouts += 10  # 600 per minute over the newest minute
        pages = 2_000_000 - i * 3000
        host.append({"ts": ts, "mem_total_bytes": 51_500_000_000, "mem_free_bytes": pages * 16384,
                     "mem_available_bytes": pages * 16384 + 1_000_000_000, "page_size": 16384, "pages_free": pages,
                     "swap_used_bytes": swapouts * 16384, "swapins": 0, "swapouts": swapouts,
                     "pressure": 20.0 if i >= 500 else 0.0, "source": source})  # fmt: skip
    stopping_since = now - timedelta(minutes=3, seconds=12)
    models = []
    for i in range(0, 600, 2):
        ts = start + timedelta(seconds=i)
        stopping = ts >= stopping_since
        models.append({"ts": ts, "model": MODEL, "state": "stopping" if stopping else "loaded",
                       "expires_at": stopping_since if stopping else now + timedelta(minutes=5),
                       "stopping_since": stopping_since if stopping else None, "size_bytes": 9_600_000_000,
                       "size_vram_bytes": 9_600_000_000, "processor": processor, "context_length": 8192,
                       "runner_vram_bytes": runner_vram,
                       "runner_pid": 4242, "runner_create_time": 1.0, "runner_rss_bytes": 10_600_000_000,
                       "runner_cpu_percent": 99.7, "runner_threads": 12})  # fmt: skip
    events = [
        {"ts": start, "kind": "sampler_started", "model": None, "detail": {"pid": 1}},
        {"ts": start + timedelta(seconds=1), "kind": "loaded", "model": MODEL, "detail": {"from": None, "runner_pid": 4242}},
        {"ts": stopping_since + timedelta(seconds=1), "kind": "stopping", "model": MODEL, "detail": {"from": "loaded"}},
        {"ts": start + timedelta(seconds=500), "kind": "pressure", "model": None, "detail": {"from": "normal", "to": "warn"}},
    ]
    last_tick = now - timedelta(seconds=heartbeat_age_s)
    beat = heartbeat_row(pid=1234, started_at=start, last_tick_at=last_tick, ticks=600, errors=0,
                         interval_s=1.0, now=last_tick)  # fmt: skip
    Sidecar(path).write_batch({"host_samples": host, "model_samples": models, "events": events, "sampler_status": [beat]})


def run_live(monkeypatch: pytest.MonkeyPatch, db: Path) -> AppTest:
    monkeypatch.setenv("OASIS_OPS_DB", str(db))
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", "http://127.0.0.1:9")  # never a real Ollama
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("pages/live.py").run()
    return at


def _text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [e.value for e in at.error]
    return "\n".join(parts)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _chart_labels(at: AppTest) -> set[str]:
    """Every marker label in the chart's datasets (Arrow IPC in the element's proto)."""
    charts = [el for el in at.main if getattr(el.proto, "spec", None)]
    labels: set[str] = set()
    for dataset in charts[0].proto.datasets:
        table = pa.ipc.open_stream(dataset.data.data).read_all()
        if "label" in table.column_names:
            labels.update(str(v) for v in table.column("label").to_pylist())
    return labels


def _chart_times_ms(at: AppTest) -> list[int]:
    """Every `minute` value (epoch ms, Vega's time unit) in the chart's datasets."""
    charts = [el for el in at.main if getattr(el.proto, "spec", None)]
    values: list[int] = []
    for dataset in charts[0].proto.datasets:
        table = pa.ipc.open_stream(dataset.data.data).read_all()
        if "minute" in table.column_names:
            values += [int(v) for v in table.column("minute").to_pylist()]
    return values


def _chart_spec(at: AppTest) -> str:
    charts = [el for el in at.main if el.type == "arrow_vega_lite_chart" or getattr(el.proto, "spec", None)]
    assert charts, "no chart on the page"
    return str(charts[0].proto.spec)


def test_live_page_shows_a_stopping_model_memory_and_the_charts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    write_sidecar(tmp_path / "trials.ops.duckdb", now, heartbeat_age_s=1.0)
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    # (Ollama is down here: only the action bar, which asks Ollama itself, may say so.)
    assert not [e.value for e in at.error if "Ollama" not in e.value], [e.value for e in at.error]
    text = _text(at)

    # Model state in red with how long it has been stopping (3m12s when the data was written).
    match = re.search(r":red\[\*\*Stopping for (\d+)m(\d\d)s\*\*\]", text)
    assert match, text
    stopping_for = int(match.group(1)) * 60 + int(match.group(2))
    assert 192 <= stopping_for < 192 + 60
    metrics = _metrics(at)
    assert metrics["Runner PID"] == "4242"
    assert metrics["Runner RSS"] == "10.6 GB"
    assert metrics["Runner CPU"] == "99.7%"
    assert metrics["CPU/GPU split"] == "100% GPU"
    assert "Runner VRAM" not in metrics  # no GPU read (a Mac, a CPU box): no VRAM figure, no error
    # Host memory: the newest sample (599 s in): 2,000,000 - 599*3000 pages of 16 KiB.
    pages = 2_000_000 - 599 * 3000
    assert metrics["Free memory"] == f"{pages * 16384 / 1e9:.1f} GB"
    assert f"{pages:,} pages of 16,384 B" in text
    assert metrics["Pressure"] == "warn"
    assert metrics["Swap-outs / min"] == "600"
    assert "Flash attention" in metrics
    # Freshness of every source, and a running sampler.
    assert re.search(r"trials snapshot \d+ s old", text)
    assert re.search(r"last host sample \d+ s ago", text)
    assert re.search(r"last /api/ps sample \d+ s ago", text)
    assert "sampler running (pid 1234" in text
    assert "sampler is down" not in text and "SIMULATED" not in text

    # One chart with the four panels and the state-change markers on it.
    spec = _chart_spec(at)
    for title in ("Latency (s)", "Failure rate", "Free memory", "Swap-outs per minute"):
        assert title in spec, title
    assert spec.count('"strokeDash": [4, 3]') >= 4  # a marker layer on each of the four panels
    assert {f"{MODEL} loaded", f"{MODEL} stopping", "pressure warn", "sampler started"} <= _chart_labels(at)
    # Every time in the chart's data is epoch milliseconds inside the 30-minute window.
    times = _chart_times_ms(at)
    now_ms = now.timestamp() * 1000
    assert len(times) > 100 and all(now_ms - 32 * 60_000 <= t <= now_ms + 60_000 for t in times)


def test_live_page_says_when_the_sampler_is_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    write_sidecar(tmp_path / "trials.ops.duckdb", now, heartbeat_age_s=120.0, source="simulated")
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "The sampler is down" in warnings and re.search(r"last tick 2m0\ds ago", warnings), warnings
    text = _text(at)
    assert re.search(r"sampler is down \(last tick 2m0\ds ago\)", text)
    # Simulated host memory (the demo's) is labelled as such, in the header and on the chart.
    assert "SIMULATED host memory" in text
    assert "SIMULATED host (demo)" in _chart_spec(at)
    # The charts still render from the (stale) telemetry.
    assert "Free memory" in _chart_spec(at)


def test_live_page_without_telemetry_or_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "not-yet.duckdb"  # the runner has not created it yet
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    text = _text(at)
    assert "No telemetry yet" in text and f"oasis-ops sample --db {db}" in text
    assert "does not exist yet" in text
    assert not (tmp_path / "not-yet.ops.duckdb").exists()  # the page never creates the sidecar
    assert "Free memory" in _chart_spec(at)  # empty panels over the window, no error


def test_corrupt_sidecar_gives_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    (tmp_path / "trials.ops.duckdb").write_bytes(b"not duckdb\n" * 1000)
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and "Not a readable DuckDB database" in at.error[0].value


def test_a_blocked_api_ps_is_said_and_recovery_stays_offered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ollama >= 0.32.4: /api/ps waits while a stuck runner is pinged, /api/version answers. The
    page must not say "Ollama is not reachable" nor "nothing to recover"."""
    from helpers_probes import FakeOllama

    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    sidecar = db.with_name("trials.ops.duckdb")
    write_sidecar(sidecar, now, heartbeat_age_s=2)
    Sidecar(sidecar).write_batch({"events": [{"ts": now - timedelta(seconds=40), "kind": "ollama_ps_blocked", "model": None,
                                              "detail": {"error": "Ollama did not answer GET /api/ps within 2 s"}}]})  # fmt: skip
    ollama = FakeOllama()
    ollama.mode, ollama.delay_s = "ps_slow", 6.0
    try:
        monkeypatch.setenv("OASIS_OPS_OLLAMA_TIMEOUT_S", "1")
        monkeypatch.setenv("OASIS_OPS_DB", str(db))
        monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
        monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", ollama.url)
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        at.switch_page("pages/live.py").run()
        text = _text(at)
        assert "Ollama answers, but `/api/ps` has not for" in text
        assert "Ollama is not reachable" not in text and "nothing to recover" not in text
        assert "Ollama's /api/ps does not answer" in text
        labels = {b.label for b in at.button}
        assert {"Hard-kill", "Recover"} <= labels  # a hard-kill finds its runner without /api/ps
    finally:
        ollama.close()


def test_a_finished_run_is_shown_as_it_last_was_without_actions_or_sampler_advice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ended = datetime.now(UTC) - timedelta(days=3)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, ended)
    write_sidecar(tmp_path / "trials.ops.duckdb", ended, heartbeat_age_s=0)
    old = ended.timestamp()
    os.utime(db, (old, old))  # finished three days ago: nothing written since
    at = run_live(monkeypatch, db)
    assert not at.exception
    text = _text(at)
    assert ":gray-badge[:material/history: Finished run]" in text and f"as of {ended:%Y-%m-%d %H:%M}" in text
    assert "Stopping for 3m12s" in text  # its state at its last sample, not "for 3 days"
    assert "oasis-ops sample" not in text and "The sampler is down" not in text  # no advice for a finished run
    assert "No recovery actions here" in text and "Ollama is not reachable" not in text  # today's Ollama is not its concern
    assert not [b for b in at.button if b.label in ("Evict", "Hard-kill", "Recover")]
    assert "host memory recorded on" in text


def test_an_active_warning_is_a_banner_with_its_countdown_and_its_action(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    side = tmp_path / "trials.ops.duckdb"
    write_sidecar(side, now, heartbeat_age_s=1.0)
    first = now - timedelta(minutes=3)
    raised = {"change": "raised", "kind": "memory_exhaustion", "subject": None, "severity": "warn", "first_seen": first,
              "eta": now + timedelta(minutes=12, seconds=30), "message": "free memory 9.1 GB, falling 700 MB/min",
              "evidence": {"free_bytes": 9_100_000_000}, "action": "concurrency 1"}  # fmt: skip
    old = {**raised, "kind": "backlog", "first_seen": now - timedelta(minutes=30), "eta": None, "message": "old backlog"}
    Sidecar(side).write_batch({"warnings": [{**raised, "ts": now - timedelta(minutes=1)}, {**old, "ts": now - timedelta(minutes=25)},
                                            {**old, "change": "cleared", "ts": now - timedelta(minutes=10)}]})  # fmt: skip
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    banners = [w.value for w in at.warning if "Memory running out" in w.value]
    assert len(banners) == 1, [w.value for w in at.warning]
    assert re.search(r"\*\*in 12m[23]\ds\*\*", banners[0]) and "free memory 9.1 GB, falling 700 MB/min" in banners[0]
    assert "old backlog" not in _text(at)  # cleared: no banner
    button = [b for b in at.button if b.label == "Lower concurrency to 1"]
    assert len(button) == 1
    button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    pending = at.session_state["oasis_pending_action"] if "oasis_pending_action" in at.session_state else None  # pages/_actions.PENDING_KEY
    assert pending is not None and pending["action"] == "concurrency" and pending["params"] == {"n": 1}


def test_the_proxys_queue_and_a_hold_are_shown_and_a_dead_applier_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json
    import os

    import psutil

    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    write_sidecar(tmp_path / "trials.ops.duckdb", now, heartbeat_age_s=1.0)
    control = tmp_path / "trials.control"
    control.mkdir(mode=0o700)
    state = {"kind": "proxy", "pid": os.getpid(), "create_time": psutil.Process().create_time(), "applied_version": 2,
             "max_concurrency": 1, "paused": False, "in_flight": 1, "queued": 2, "completed": 40,
             "held": "hard_kill of gemma4:e4b in progress (requested by watchdog)", "heartbeat_at": now.isoformat()}  # fmt: skip
    (control / "state.json").write_text(json.dumps(state))
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    assert ("Proxy: 1 in flight · 2 queued · max concurrency 1 · :orange[holding new requests: hard_kill of gemma4:e4b "
            "in progress (requested by watchdog)]") in _text(at)
    (control / "state.json").write_text(json.dumps({**state, "heartbeat_at": (now - timedelta(minutes=5)).isoformat()}))
    at = run_live(monkeypatch, db)
    assert "Proxy: proxy not responding (pid" in _text(at) and "2 queued" in _text(at)


def test_a_runner_on_a_linux_gpu_shows_its_vram_beside_its_cpu_and_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    db = tmp_path / "trials.duckdb"
    write_live_trials(db, now)
    write_sidecar(tmp_path / "trials.ops.duckdb", now, heartbeat_age_s=1.0, runner_vram=4_990_000_000, processor="48%/52% CPU/GPU")
    at = run_live(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    metrics = _metrics(at)
    assert metrics["Runner VRAM"] == "5.0 GB" and metrics["CPU/GPU split"] == "48%/52% CPU/GPU"
    assert metrics["Runner CPU"] == "99.7%"
