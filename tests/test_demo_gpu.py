"""The demo's simulated GPU (`oasis-ops demo --gpu`) and its vram_pressure fault, on the real
emulator process, read by the console's own GPU source: a model placed at its load, then (while
another process holds the VRAM) reloaded with a CPU/GPU split, slower and with a busy CPU, as
Ollama does (llm/server.go offloads the layers that fit; `ollama ps` prints the split)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers_emulator import find_runner_pid, ps, running_emulator, wait_until
from test_emulator_faults import GEMMA, cpu_seconds_per_second, fault, per_token_ms

from oasis_ops.probes.ollama import processor_split
from oasis_ops.sampler.gpusource import GpuSource, snapshot_from_demo

GPU = {"OASIS_EMU_GPU": "1"}
MIB = 1024 * 1024


def test_the_simulated_gpu_holds_the_model_and_vram_pressure_makes_its_next_load_spill(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=100, extra_env=GPU) as emu:
        url = emu.url
        baseline = per_token_ms(url)
        (model,) = ps(url)
        assert model["size_vram"] == model["size"]  # it fits: 100% GPU
        source = GpuSource(url)
        try:
            snap = source.read()
            (gpu,) = snap.gpus
            pid = find_runner_pid(emu.pid)
            assert snap.source == "simulated" and gpu.name == "NVIDIA GeForce RTX 4090" and gpu.memory_total_bytes == 24564 * MIB
            assert snap.vram_of(pid) == model["size"] // MIB * MIB  # nvidia-smi counts MiB
            idle_cpu = cpu_seconds_per_second(pid)

            assert fault(url, "vram_pressure", "on", "--ramp-s", "1") == 0
            gone = wait_until(lambda: not ps(url), timeout=15, what="the model unloaded to reload")
            assert gone is True
            spilled = per_token_ms(url, n=2)  # reloads into what the other process left
            (model,) = ps(url)
            assert 0 < model["size_vram"] < model["size"]
            split = processor_split(model["size"], model["size_vram"])[0]
            assert split == "60%/40% CPU/GPU", split  # leave_fraction 0.4 of the model on the GPU
            assert spilled > 2.5 * baseline, (baseline, spilled)  # 1 + (6 - 1) x 0.6 = 4x
            new_pid = find_runner_pid(emu.pid)
            assert new_pid != pid and cpu_seconds_per_second(new_pid) > 0.4 > idle_cpu  # its CPU layers keep a core busy
            snap = source.read()
            (gpu,) = snap.gpus
            assert gpu.memory_free_bytes is not None and gpu.memory_free_bytes < 0.05 * gpu.memory_total_bytes  # full
            assert snap.vram_of(new_pid) == model["size_vram"] // MIB * MIB and len(snap.processes) == 2  # + the other process

            # Clearing the fault frees the VRAM, but the model stays split until it reloads (an evict).
            assert fault(url, "vram_pressure", "off") == 0
            (model,) = ps(url)
            assert model["size_vram"] < model["size"]
            httpx.post(url + "/api/generate", json={"model": GEMMA, "keep_alive": 0}, timeout=10)
            wait_until(lambda: not ps(url), timeout=15, what="evicted")
            per_token_ms(url, n=1)
            (model,) = ps(url)
            assert model["size_vram"] == model["size"]
        finally:
            source.close()


def test_without_a_gpu_the_fault_is_refused_and_the_console_reads_this_machine(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=50) as emu:
        resp = httpx.post(emu.url + "/_demo/faults", json={"name": "vram_pressure", "on": True, "params": {}}, timeout=5)
        assert resp.status_code == 400 and "start the demo with --gpu" in resp.text
        assert httpx.get(emu.url + "/_demo/gpu", timeout=5).status_code == 404
        calls: list[str] = []

        class ThisMachine:
            def read(self) -> object:
                calls.append("read")
                return "this machine's snapshot"

        source = GpuSource(emu.url, real=ThisMachine())
        try:
            assert source.read() == "this machine's snapshot" and calls == ["read"] and not source.simulated
        finally:
            source.close()


def test_a_remote_or_odd_demo_answer_is_never_taken_for_a_gpu() -> None:
    ts = datetime.fromtimestamp(time.time(), UTC)
    assert snapshot_from_demo(404, None, ts).source == "none"
    assert snapshot_from_demo(200, {"simulated": False}, ts).gpus == []
    odd = snapshot_from_demo(200, {"simulated": True, "query_gpu": 3, "query_apps": ""}, ts)
    assert odd.source == "none" and "two outputs" in (odd.note or "")
    junk = snapshot_from_demo(200, {"simulated": True, "query_gpu": "garbage\n", "query_apps": ""}, ts)
    assert junk.source == "none" and junk.note == "the demo's simulated GPU listed no GPU"
    remote = GpuSource("http://10.1.2.3:11434", real=type("R", (), {"read": lambda self: "local"})())
    try:
        assert remote.read() == "local" and not remote.loopback  # a remote server is never asked for a GPU
    finally:
        remote.close()


def _demo_page_switches(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path) -> list[str]:
    from streamlit.testing.v1 import AppTest

    from oasis_ops.server import DEMO_DIR_ENV

    monkeypatch.setenv(DEMO_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OASIS_OPS_OLLAMA_HOST", url)
    monkeypatch.setenv("OASIS_OPS_LIVE_REFRESH_S", "0")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/demo.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return [t.label for t in at.toggle]


def test_the_demo_page_offers_vram_pressure_only_with_the_simulated_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with running_emulator(tmp_path / "gpu", latency_ms=50, extra_env=GPU) as emu:
        assert "vram_pressure" in _demo_page_switches(monkeypatch, emu.url, tmp_path)
    with running_emulator(tmp_path / "cpu", latency_ms=50) as emu:
        switches = _demo_page_switches(monkeypatch, emu.url, tmp_path)
        assert "vram_pressure" not in switches and "stall" in switches
