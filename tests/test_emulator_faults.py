"""Faults switched at runtime through `oasis-ops demo fault` change the emulator measurably."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers_emulator import find_runner_pid, ps, running_emulator, wait_until

from oasis_ops.cli import main as cli
from oasis_ops.demo.faults import FAULTS

GEMMA = "gemma4:e4b"
IMAGE = "iVBORw0KGgo="  # a few base64 bytes: the emulator only counts images


def fault(url: str, *args: str) -> int:
    return cli(["demo", "fault", *args, "--url", url])


def per_token_ms(url: str, n: int = 3, **body: Any) -> float:
    """Median generation time per token over n requests (removes token-count noise)."""
    values = []
    for _ in range(n):
        r = httpx.post(url + "/api/generate", json={"model": GEMMA, "prompt": "hi", "stream": False,
                                                    "options": {"num_predict": 10}, **body}, timeout=30).json()
        values.append(r["eval_duration"] / r["eval_count"] / 1e6)
    return statistics.median(values)


def cpu_seconds_per_second(pid: int, window: float = 1.0) -> float:
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(window)
    after = proc.cpu_times()
    return (after.user + after.system - before.user - before.system) / window


def encoder_ms(log: str) -> list[int]:
    return [int(m) for m in re.findall(r"^image slice encoded in (\d+) ms$", log, re.M)]


def test_latency_drift_and_stall_switch_at_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_emulator(tmp_path, latency_ms=100) as emu:
        url = emu.url
        baseline = per_token_ms(url)
        assert fault(url, "latency_drift", "on", "--rate-per-min", "1200", "--max-multiplier", "10") == 0
        assert "latency_drift" in capsys.readouterr().out
        time.sleep(0.5)  # the multiplier grows 20/s up to its cap of 10
        drifted = per_token_ms(url, n=2)
        assert drifted > 3 * baseline, (baseline, drifted)
        assert fault(url, "latency_drift", "off") == 0
        assert per_token_ms(url) < 2.0 * baseline

        # stall with a limit: the request hangs about stall_s, then finishes.
        assert fault(url, "stall", "on", "--stall-s", "0.6") == 0
        started = time.monotonic()
        r = httpx.post(url + "/api/generate", json={"model": GEMMA, "prompt": "hi", "stream": False}, timeout=10)
        assert r.status_code == 200 and time.monotonic() - started >= 0.6
        assert fault(url, "all", "off") == 0
        capsys.readouterr()
        assert fault(url, "status") == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == len(FAULTS) and all(" off " in line for line in lines), lines


def test_flash_attention_spill_busy_cpu_while_ps_says_full_gpu(tmp_path: Path) -> None:
    with running_emulator(tmp_path, latency_ms=100) as emu:
        url = emu.url
        baseline = per_token_ms(url, images=[IMAGE])
        pid = find_runner_pid(emu.pid)
        idle_cpu = cpu_seconds_per_second(pid)
        assert fault(url, "flash_attention_cpu_spill", "on", "--slowdown", "8") == 0
        busy_cpu = cpu_seconds_per_second(pid)
        spilled = per_token_ms(url, n=2, images=[IMAGE])
        (model,) = ps(url)
        assert model["size_vram"] == model["size"]  # `ollama ps` still prints 100% GPU
        assert idle_cpu < 0.25 and busy_cpu > 0.4, (idle_cpu, busy_cpu)
        assert spilled > 3 * baseline, (baseline, spilled)
        log = emu.server_log.read_text()
        # OLLAMA_FLASH_ATTENTION=1 reaches the runner as llama-server's --flash-attn on (>= 0.30)
        assert "--flash-attn on" in log and "OLLAMA_FLASH_ATTENTION:true" in log
        timings = encoder_ms(log)
        assert len(timings) == 5 and max(timings) < 80, timings  # the encoder is not slowed
        assert fault(url, "flash_attention_cpu_spill", "off") == 0
        time.sleep(0.3)
        assert cpu_seconds_per_second(pid) < 0.25


def test_memory_pressure_grows_runner_rss_and_simulated_host(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert httpx.post(url + "/api/generate", json={"model": GEMMA, "prompt": ""}, timeout=10).status_code == 200
        runner = psutil.Process(find_runner_pid(emu.pid))
        base_rss = runner.memory_info().rss
        healthy = httpx.get(url + "/_demo/host").json()
        assert healthy["simulated"] is True and healthy["source"] == "simulated" and healthy["swapouts"] == 0
        assert fault(url, "memory_pressure", "on", "--rate-mb-s", "200", "--cap-mb", "64", "--ramp-s", "1") == 0
        wait_until(lambda: runner.memory_info().rss > base_rss + 48e6, 8, what="runner RSS to grow")
        time.sleep(1.2)
        host = httpx.get(url + "/_demo/host").json()
        assert host["pages_free"] < healthy["pages_free"] / 10
        assert host["swapouts"] > 0 and host["pressure"] > 50 and host["pressure_level"] == 4
        assert host["page_size"] == 16384
        state = httpx.get(url + "/_demo/faults").json()["faults"]["memory_pressure"]
        assert state["on"] and state["rss_target_mb"] == 64.0
        assert fault(url, "memory_pressure", "off") == 0
        wait_until(lambda: runner.memory_info().rss < base_rss + 16e6, 8, what="runner RSS to shrink")
        assert httpx.get(url + "/_demo/host").json()["swapouts"] >= host["swapouts"]  # counters never go back


def test_fault_cli_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fault("127.0.0.1:9", "status") == 1  # nothing listens there
    assert "cannot reach the emulator" in capsys.readouterr().err
    with running_emulator(tmp_path) as emu:
        assert fault(emu.url, "no_such_fault", "on") == 2
        assert fault(emu.url, "stall", "on", "--rate-mb-s", "5") == 2  # not a stall parameter
        assert fault(emu.url, "stall", "on", "--stall-s", "-1") == 2  # the emulator rejects it
        assert fault(emu.url, "stall") == 2  # on or off missing
        err = capsys.readouterr().err
        assert "unknown fault" in err and "no parameter rate_mb_s" in err and "between 0 and 86400" in err
        assert not httpx.get(emu.url + "/_demo/faults").json()["faults"]["stall"]["on"]
