"""`status` and the Live header count "Stopping for" from the runner's Stopping episode.

A harness that re-sends keep_alive 0 after every run of timeouts resets Ollama's expires_at
each time, so /api/ps alone would show a few seconds while the runner has been stuck for minutes
(seen in the demo). The sampler's samples of the same runner tell the real start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oasis_ops.sampler import views
from oasis_ops.sidecar import Sidecar
from oasis_ops.status import with_episode

NOW = datetime(2025, 11, 20, 18, 10, tzinfo=UTC)
MODEL = "gemma4:e4b"


def _samples(stuck_since: datetime, runner_pid: int = 4242) -> list[dict[str, Any]]:
    rows = []
    t = stuck_since - timedelta(seconds=30)
    while t <= NOW:
        stopping = t >= stuck_since
        # the harness re-evicts every 20 s: Ollama's stopping_since restarts each time
        reset = stuck_since + timedelta(seconds=20 * int((t - stuck_since).total_seconds() // 20)) if stopping else None
        rows.append({
            "ts": t, "model": MODEL, "state": "stopping" if stopping else "loaded",
            "expires_at": reset if stopping else t + timedelta(minutes=5), "stopping_since": reset,
            "size_bytes": 9_000_000_000, "size_vram_bytes": 9_000_000_000, "processor": "100% GPU",
            "context_length": 4096, "runner_pid": runner_pid, "runner_create_time": 1_700_000_000.0,
            "runner_rss_bytes": 10_600_000_000, "runner_cpu_percent": 99.7, "runner_threads": 12,
        })
        t += timedelta(seconds=2)
    return rows


def _sidecar(tmp_path: Path, rows: list[dict[str, Any]]) -> Sidecar:
    sidecar = Sidecar(tmp_path / "trials.ops.duckdb")
    sidecar.migrate()
    sidecar.write_batch({"model_samples": rows})
    return sidecar


def test_status_counts_from_the_episode(tmp_path: Path) -> None:
    stuck_since = NOW - timedelta(minutes=3, seconds=12)
    sidecar = _sidecar(tmp_path, _samples(stuck_since))
    ollama_since = NOW - timedelta(seconds=6)
    entry = {"name": MODEL, "state": "stopping", "runner_pid": 4242,
             "stopping_since": ollama_since.isoformat(), "stopping_for_s": 6.0}
    out = with_episode(entry, sidecar, NOW)
    assert out["stopping_counted_from"] == "sampler episode"
    assert out["stopping_for_s"] == 192.0 and out["stopping_since"] == stuck_since.isoformat()

    # Another runner (a respawn) starts a new episode: Ollama's own figure stands.
    other = with_episode(dict(entry, runner_pid=5151), sidecar, NOW)
    assert other["stopping_counted_from"] == "ollama" and other["stopping_for_s"] == 6.0
    # No sidecar: Ollama's figure, and it says so.
    assert with_episode(dict(entry), None, NOW)["stopping_counted_from"] == "ollama"


def test_live_header_counts_from_the_episode(tmp_path: Path) -> None:
    stuck_since = NOW - timedelta(minutes=3, seconds=12)
    sidecar = _sidecar(tmp_path, _samples(stuck_since))
    header = views.live_header(sidecar, NOW)
    (model,) = header.models
    assert model.state == "stopping"
    assert model.stopping_since == stuck_since
    assert model.stopping_for_s is not None and abs(model.stopping_for_s - 192.0) < 0.01
