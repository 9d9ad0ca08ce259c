"""`oasis-ops status`: its JSON keys and values against the real emulator, and with Ollama down."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_emulator import (
    blob_of,
    find_runner_pid,
    is_stopping,
    ps,
    running_emulator,
    set_fault,
    wait_until,
)

from oasis_ops.cli import main as cli_main
from oasis_ops.sidecar import Sidecar, heartbeat_row

MODEL = "gemma4:e4b"
TOP_KEYS = {"taken_at", "ollama", "models", "host", "flash_attention", "sidecar", "sampler", "control", "gpus", "errors"}
OLLAMA_KEYS = {"url", "reachable", "version", "error"}
MODEL_KEYS = {
    "name", "state", "stopping_since", "stopping_for_s", "stopping_counted_from", "expires_at", "keep_alive_forever", "processor",
    "processor_cpu_percent", "processor_gpu_percent", "size_bytes", "size_vram_bytes", "context_length",
    "runner_pid", "runner_create_time", "runner_rss_bytes", "runner_cpu_percent", "runner_threads",
    "runner_cmdline", "note", "flash_attention", "emulated", "ollama_state", "busy", "judged",
}  # fmt: skip
HOST_KEYS = {
    "ts", "source", "simulated", "mem_total_bytes", "mem_free_bytes", "mem_available_bytes", "page_size",
    "pages_free", "swap_total_bytes", "swap_used_bytes", "swapins", "swapouts", "swapouts_per_min",
    "swapouts_per_min_from", "pressure", "pressure_level", "error",
}  # fmt: skip
SAMPLER_KEYS = {"running", "pid", "last_tick_at", "age_s", "errors", "last_error", "summary"}


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = cli_main(["status", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_status_against_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with running_emulator(tmp_path) as emu:
        monkeypatch.setenv("OLLAMA_HOST", emu.url)
        monkeypatch.setenv("OLLAMA_MODELS", str(emu.home.models_dir))
        httpx.post(emu.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False}, timeout=30).raise_for_status()
        runner = find_runner_pid(emu.pid, blob_of(emu.url, MODEL))

        code, snap = status(capsys)
        assert code == 0
        assert set(snap) == TOP_KEYS and set(snap["ollama"]) == OLLAMA_KEYS and set(snap["host"]) == HOST_KEYS
        assert snap["ollama"] == {"url": emu.url, "reachable": True, "version": emu.info["version"], "error": None}
        (model,) = snap["models"]
        assert set(model) == MODEL_KEYS
        assert model["name"] == MODEL and model["state"] == "loaded" and model["stopping_for_s"] is None
        assert model["emulated"] is True  # gemma4:e4b is the demo's emulated model, and says so
        assert (model["flash_attention"]["value"], model["flash_attention"]["source"]) == ("on", "environment")
        assert model["runner_pid"] == runner and model["runner_rss_bytes"] > 1_000_000
        assert model["runner_cpu_percent"] is not None  # two looks, a second apart
        assert model["processor"] == "100% GPU" and model["processor_gpu_percent"] == 100.0
        assert "--model" in model["runner_cmdline"]
        host = snap["host"]
        assert host["simulated"] is True and host["source"] == "simulated"  # the demo's host, labelled
        assert host["page_size"] == 16384 and host["pages_free"] * 16384 == host["mem_free_bytes"]
        assert host["swapouts_per_min"] is not None and host["swapouts_per_min_from"].startswith("two readings")
        assert host["pressure_level"] == "normal"
        # The emulator runs with OLLAMA_FLASH_ATTENTION=1, readable in its environment here (Linux).
        assert snap["flash_attention"]["value"] == "on" and snap["flash_attention"]["source"] == "environment"
        assert snap["sidecar"] is None and snap["sampler"] is None and snap["errors"] == []

        # Stopping: keep_alive 0 while a request is stalled.
        set_fault(emu.url, "stall", True, stall_s=20)
        request = threading.Thread(
            target=lambda: httpx.post(emu.url + "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}, timeout=30),
            daemon=True,
        )
        request.start()
        time.sleep(0.3)
        httpx.post(emu.url + "/api/generate", json={"model": MODEL, "keep_alive": 0}, timeout=10).raise_for_status()
        wait_until(lambda: is_stopping(ps(emu.url)[0]), what="Stopping")
        time.sleep(1.2)
        assert cli_main(["status"]) == 0
        text = capsys.readouterr().out
        assert f"{MODEL}" in text and "STOPPING for " in text and f"runner pid {runner}" in text
        assert "SIMULATED by the demo emulator" in text
        code, snap = status(capsys)
        assert snap["models"][0]["state"] == "stopping" and snap["models"][0]["stopping_for_s"] >= 1.0
        assert snap["models"][0]["stopping_since"] is not None
        set_fault(emu.url, "stall", False)
        request.join(30)


def test_status_with_ollama_down(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    code, snap = status(capsys)
    assert code == 0  # the snapshot was taken: Ollama being down is part of it
    assert snap["ollama"]["reachable"] is False and snap["ollama"]["version"] is None
    assert "cannot connect to Ollama at http://127.0.0.1:9" in snap["ollama"]["error"]
    assert snap["models"] == []
    host = snap["host"]
    assert host["source"] == "linux:/proc" and host["simulated"] is False
    assert host["mem_free_bytes"] > 0 and host["page_size"] > 0 and host["pages_free"] > 0
    assert host["swapouts_per_min"] is not None  # two readings ~1 s apart (this machine has no swap: 0)
    assert snap["errors"] == []
    assert cli_main(["status"]) == 0
    assert "NOT REACHABLE" in capsys.readouterr().out


def test_status_reads_the_swap_rate_and_sampler_from_the_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    db = tmp_path / "trials.duckdb"
    now = datetime.now(UTC)
    rows = [{"ts": now - timedelta(seconds=60 - i), "swapouts": 1000 + 10 * i, "source": "linux:/proc", "page_size": 4096}
            for i in range(60)]  # fmt: skip  # 10 per second = 600 per minute
    beat = heartbeat_row(pid=4321, host="h", started_at=now - timedelta(minutes=5), last_tick_at=now - timedelta(seconds=1),
                         ticks=300, errors=2, last_error="host: x", interval_s=1.0)  # fmt: skip
    Sidecar(tmp_path / "trials.ops.duckdb").write_batch({"host_samples": rows, "sampler_status": [beat]})
    code, snap = status(capsys, "--db", str(db))
    assert code == 0
    assert snap["host"]["swapouts_per_min"] == pytest.approx(600.0, rel=0.01)
    assert snap["host"]["swapouts_per_min_from"].startswith("sidecar: 60 samples")
    assert snap["sidecar"] == str(tmp_path / "trials.ops.duckdb")
    assert set(snap["sampler"]) == SAMPLER_KEYS
    assert snap["sampler"]["running"] is True and snap["sampler"]["pid"] == 4321 and snap["sampler"]["errors"] == 2


def test_status_exits_1_on_an_unreadable_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    (tmp_path / "trials.ops.duckdb").write_bytes(b"junk" * 4096)
    code, snap = status(capsys, "--db", str(tmp_path / "trials.duckdb"))
    assert code == 1
    assert snap["errors"] and snap["errors"][0].startswith("sidecar: ") and "DuckDB" in snap["errors"][0]
    assert snap["host"]["mem_free_bytes"] > 0  # everything else is still reported


def test_status_is_bounded_by_a_server_that_lists_20000_models(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """One /api/show per listed model (each blob unknown) took over a minute: only MAX_MODELS are
    probed, and the listing's size is said."""
    from helpers_probes import FakeOllama

    from oasis_ops.probes import ModelProbe

    fake = FakeOllama()
    fake.models = [{"name": f"m{i}:latest", "model": f"m{i}:latest", "size": 1, "size_vram": 1,
                    "expires_at": "2999-01-01T00:00:00Z"} for i in range(20_000)]  # fmt: skip
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    try:
        started = time.monotonic()
        code, snap = status(capsys)
        assert time.monotonic() - started < 30
    finally:
        fake.close()
    assert code == 1 and len(snap["models"]) == ModelProbe.MAX_MODELS  # 1: what it could not show is an error
    assert any("20000 loaded models" in e for e in snap["errors"])
    shows = sum(1 for _, path, _ in fake.requests if path == "/api/show")
    assert 0 < shows <= 3 * ModelProbe.MAX_MODELS  # per look and for flash attention, never per listed model
