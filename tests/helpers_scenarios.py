"""Small incident scenarios for the diagnosis tests: a trial DB, its sidecar and both logs.

`build_scenario(dir, faults)` writes a 60-minute healthy run (one trial every 6 s) followed by a
six-minute window in which the chosen faults act, through the real writers: trials via
TrialWriter, telemetry via Sidecar.write_batch, server.log in Ollama's own line formats
(oasis_ops.demo.ollama.servelog) and a harness runner.log, both ingested with ingest_logs. Faults:

- "deadlock": requests hang in the window (no server line), the harness evicts at the window's
  end, the model stays Stopping for 20 minutes with its runner at 99.7% CPU, no trial lands;
- "memory": pages free fall 36x in the hour before, swap-outs climb to 500k, pressure critical;
  generation stalls behind swap (eval slow, encoder 17 ms), so requests finish after 60 s;
- "flash": flash attention on in the logs, runner at ~97% CPU while /api/ps says 100% GPU,
  generation 4x slower with the encoder unchanged (no timeouts);
- "cold": the model is unloaded after every request: gone / loaded events, a new runner pid,
  "starting llama-server" + "started in 12.5 seconds" lines, a cold encoder, ~18 s trials;
- "client": the harness times out while the server answers every request in 4-8 s.
With no fault and slow=True the whole run is uniformly slow (p50 20 s) and healthy.
Flash attention is off in the logs unless "flash" is among the faults.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from oasis_ops.demo.ollama.servelog import gin_line, server_config_env, slog_line
from oasis_ops.logs.ingest import ingest_logs
from oasis_ops.sidecar import Sidecar
from oasis_ops.trials.writer import TrialWriter

MODEL = "gemma4:e4b"
BLOB = "/Users/eval/.ollama/models/blobs/sha256-9ed150d4b2a1c58e8f3a2e0e5d3b0c1f0a9f8e7d6c5b4a39281706f5e4d3c2b1"
MODEL_BYTES = 9_600_000_000
MEM_TOTAL = 55_297_703_936
PAGE = 16_384
RUNNER_PID = 4242
TRIAL_EVERY_S = 6
HEALTHY_MIN = 60
WINDOW_MIN = 6
STOPPING_MIN = 20
FAULTS = ("deadlock", "memory", "flash", "cold", "client", "vram")
GPU_TOTAL = 25_757_220_864  # an NVIDIA RTX 4090's 24 GiB as NVML reports it
SPILL_SHARE = 0.52  # `ollama ps`: "48%/52% CPU/GPU"
# The incident's clock: the window is 17:58-18:04 UTC.
INCIDENT_WINDOW_START = datetime(2025, 11, 20, 17, 58, tzinfo=UTC)


@dataclass
class Scenario:
    root: Path
    db: Path
    sidecar: Path
    server_log: Path
    runner_log: Path
    window_start: datetime
    window_end: datetime
    faults: frozenset[str]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Logs:
    server: list[tuple[datetime, int, str]] = field(default_factory=list)
    harness: list[tuple[datetime, int, str]] = field(default_factory=list)
    seq: int = 0

    def add_server(self, ts: datetime, line: str) -> None:
        self.seq += 1
        self.server.append((ts, self.seq, line))

    def add_harness(self, ts: datetime, message: str) -> None:
        self.seq += 1
        self.harness.append((ts, self.seq, f"{ts:%Y-%m-%d %H:%M:%S} {message}"))


def _timing_lines(task: int, encode_ms: float, eval_ms: float, eval_tokens: int = 150) -> list[str]:
    prompt_ms = 400.0 + encode_ms
    return [
        f"slot launch_slot_: id  0 | task {task} | processing task",
        f"image slice encoded in {encode_ms:.0f} ms",
        "image decoded (batch 1/1) in 41 ms",
        f"slot print_timing: id  0 | task {task} | prompt eval time =     {prompt_ms:.2f} ms /   312 tokens (    1.29 ms per token,   775.81 tokens per second)",
        f"slot print_timing: id  0 | task {task} |        eval time =    {eval_ms:.2f} ms /   {eval_tokens} tokens (   24.81 ms per token,    40.31 tokens per second)",
        f"slot print_timing: id  0 | task {task} |       total time =    {prompt_ms + eval_ms:.2f} ms /   {312 + eval_tokens} tokens",
    ]


def _runner_start(logs: _Logs, ts: datetime, flash: bool, load_s: float = 3.51) -> None:
    fa = "on" if flash else "off"
    cmd = f"/Applications/Ollama.app/Contents/Resources/llama-server --model {BLOB} --port 50123 --host 127.0.0.1 -c 8192 -np 1 --flash-attn {fa}"
    logs.add_server(ts, slog_line("INFO", "llama_server.go:433", "starting llama-server", {"cmd": cmd}, when=ts))
    request = f"{{Operation:commit LoraPath:[] Parallel:1 BatchSize:512 FlashAttention:{'Enabled' if flash else 'Disabled'} KvSize:8192}}"
    logs.add_server(ts, slog_line("INFO", "sched.go:512", "load", {"request": request}, when=ts))
    done = ts + timedelta(seconds=load_s)
    logs.add_server(done, slog_line("INFO", "llama_server.go:512", f"llama-server started in {load_s:.2f} seconds", when=done))


def build_scenario(
    root: Path,
    faults: Iterable[str] = (),
    *,
    slow: bool = False,
    seed: int = 7,
    window_start: datetime = INCIDENT_WINDOW_START,
) -> Scenario:
    chosen = frozenset(faults)
    unknown = chosen - set(FAULTS)
    assert not unknown, f"unknown faults {unknown}"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w0 = window_start
    w1 = w0 + timedelta(minutes=WINDOW_MIN)
    t0 = w0 - timedelta(minutes=HEALTHY_MIN)
    flash_on = "flash" in chosen
    deadlock = "deadlock" in chosen
    run_end = w1 if deadlock else w1 + timedelta(minutes=10)
    telemetry_end = w1 + timedelta(minutes=STOPPING_MIN) if deadlock else run_end
    p50 = 20_000.0 if slow else 4_100.0

    scen = Scenario(root, root / "trials.duckdb", root / "trials.ops.duckdb", root / "server.log", root / "runner.log", w0, w1, chosen)
    logs = _Logs()
    env = {"OLLAMA_FLASH_ATTENTION": "1" if flash_on else "0", "OLLAMA_KEEP_ALIVE": "5m0s", "OLLAMA_NUM_PARALLEL": "1"}
    logs.add_server(t0 - timedelta(minutes=5), slog_line("INFO", "routes.go:1259", "server config", {"env": server_config_env(env)}, when=t0 - timedelta(minutes=5)))
    _runner_start(logs, t0 - timedelta(minutes=4), flash_on)

    events: list[dict[str, Any]] = [{"ts": t0 - timedelta(minutes=4), "kind": "loaded", "model": MODEL, "detail": {"runner_pid": RUNNER_PID}}]
    # cold start: (loaded_from, loaded_until, pid) intervals inside the window
    cold_loads: list[tuple[datetime, datetime, int]] = []

    trials: list[dict[str, Any]] = []
    ts = t0
    task = 0
    pid_counter = RUNNER_PID
    while ts < run_end:
        task += 1
        in_window = w0 <= ts < w1
        status, latency, error = "ok", float(p50 * np.exp(0.24 * rng.standard_normal())), None
        server_ms: float | None = latency - 150.0  # what the server took (None: it never answered)
        encode_ms, eval_ms = 17.0 + rng.uniform(-1, 1), max(latency - 900.0, 500.0)
        if in_window and chosen:
            if "memory" in chosen:
                server_ms = float(rng.uniform(65_000, 95_000))
                eval_ms = server_ms - 1000.0
                status, latency, error = "timeout", None, "timed out after 1m0s (litellm.Timeout)"
            elif "flash" in chosen or "vram" in chosen:
                latency = float(4 * p50 * np.exp(0.1 * rng.standard_normal()))
                server_ms = latency - 150.0
                eval_ms = server_ms - 500.0
            elif "cold" in chosen:
                load_s = 12.5
                pid_counter += 1
                events.append({"ts": ts, "kind": "gone", "model": MODEL, "detail": {}})
                _runner_start(logs, ts, flash_on, load_s)
                loaded_at = ts + timedelta(seconds=load_s)
                events.append({"ts": loaded_at, "kind": "loaded", "model": MODEL, "detail": {"runner_pid": pid_counter}})
                events.append({"ts": loaded_at, "kind": "runner_pid_changed", "model": MODEL, "detail": {"runner_pid": pid_counter}})
                encode_ms = float(rng.uniform(850, 1000))
                latency = load_s * 1000 + float(p50 * np.exp(0.1 * rng.standard_normal())) + encode_ms
                server_ms = latency - 150.0
                eval_ms = latency - load_s * 1000 - 900.0
                cold_loads.append((loaded_at, ts + timedelta(milliseconds=latency), pid_counter))
            elif "client" in chosen:
                server_ms = float(rng.uniform(4_000, 8_000))
                eval_ms = server_ms - 900.0
                status, latency, error = "timeout", None, "timed out after 1m0s (litellm.Timeout)"
            if deadlock and "memory" not in chosen and "flash" not in chosen:
                server_ms = None  # hung: the server never answers
                status, latency, error = "timeout", None, "timed out after 1m0s (litellm.Timeout)"
            elif deadlock:
                status, latency, error = "timeout", None, "timed out after 1m0s (litellm.Timeout)"
                server_ms = max(server_ms or 0.0, float(rng.uniform(65_000, 95_000)))
                eval_ms = server_ms - 1000.0
        finished = ts + timedelta(milliseconds=latency if latency is not None else 60_000.0)
        trials.append({"trial_id": task, "run_id": "run-1", "model": MODEL, "started_at": ts, "finished_at": finished,
                       "latency_ms": latency, "status": status, "error": error})  # fmt: skip
        if status == "ok":
            logs.add_harness(finished, f"trial {task} ok in {latency / 1000:.2f}s")  # type: ignore[operator]
        else:
            logs.add_harness(finished, f"trial {task} timed out after 1m0s (litellm.Timeout)")
        if server_ms is not None:
            done = ts + timedelta(milliseconds=server_ms)
            for line in _timing_lines(task, encode_ms, eval_ms):
                logs.add_server(done, line)
            code = 200
            logs.add_server(done, gin_line(code, server_ms / 1000, "127.0.0.1", "POST", "/api/chat", when=done))
        ts += timedelta(seconds=TRIAL_EVERY_S)
    if deadlock:
        evict_at = w1 + timedelta(seconds=13)
        logs.add_harness(evict_at, f"evicting {MODEL} after 3 consecutive stalls (keep_alive=0)")
        events.append({"ts": evict_at + timedelta(seconds=1), "kind": "stopping", "model": MODEL, "detail": {}})

    # --- telemetry: host every 10 s, /api/ps + runner every 5 s
    host_rows: list[dict[str, Any]] = []
    model_rows: list[dict[str, Any]] = []
    ts = t0 - timedelta(minutes=3)
    mem_fall_start = w0 - timedelta(minutes=60)
    while ts < telemetry_end:
        pages_free = int(2_100_000 + rng.integers(-20_000, 20_000))
        swapouts, pressure, swap_used = 0, 0.0, 0
        if "memory" in chosen and ts >= mem_fall_start:
            frac = min(1.0, (ts - mem_fall_start) / (w0 - mem_fall_start))
            pages_free = int(2_103_449 * (58_402 / 2_103_449) ** frac)
            if ts >= w0 - timedelta(minutes=15):
                climb = min(1.0, (ts - (w0 - timedelta(minutes=15))) / timedelta(minutes=15 + WINDOW_MIN))
                swapouts = int(504_282 * climb)
                swap_used = int(3.3e9 * climb)
            pressure = 100.0 if ts >= w0 - timedelta(minutes=2) else (50.0 if ts >= w0 - timedelta(minutes=10) else 0.0)
        host_rows.append({
            "ts": ts, "mem_total_bytes": MEM_TOTAL, "mem_free_bytes": pages_free * PAGE,
            "mem_available_bytes": (pages_free + 800_000) * PAGE, "page_size": PAGE, "pages_free": pages_free,
            "swap_used_bytes": swap_used, "swapins": swapouts // 3, "swapouts": swapouts, "pressure": pressure,
            "source": "macos:vm_stat",
        })  # fmt: skip
        ts += timedelta(seconds=10)
    ts = t0 - timedelta(minutes=3)
    while ts < telemetry_end:
        in_window = w0 <= ts < w1
        cpu = float(rng.uniform(12, 25))
        state, expires, pid = "loaded", ts + timedelta(minutes=5), RUNNER_PID
        present = True
        if in_window and ("flash" in chosen or deadlock):
            cpu = float(rng.uniform(95, 99.9))
        vram = MODEL_BYTES
        if in_window and "vram" in chosen:  # another model took the VRAM: half the layers on the CPU
            cpu, vram = float(rng.uniform(300, 400)), int(MODEL_BYTES * SPILL_SHARE)
        if in_window and "cold" in chosen:
            match = [c for c in cold_loads if c[0] <= ts < c[1] + timedelta(seconds=1)]
            present = bool(match)
            pid = match[-1][2] if match else pid
        if deadlock and ts >= w1 + timedelta(seconds=14):
            state, expires, cpu = "stopping", w1 + timedelta(seconds=14), float(rng.uniform(99.0, 99.9))
        if present:
            model_rows.append({
                "ts": ts, "model": MODEL, "state": state, "expires_at": expires,
                "stopping_since": expires if state == "stopping" else None, "size_bytes": MODEL_BYTES,
                "size_vram_bytes": vram, "context_length": 8192, "runner_pid": pid,
                "processor": "100% GPU" if vram == MODEL_BYTES else f"{1 - SPILL_SHARE:.0%}/{SPILL_SHARE:.0%} CPU/GPU",
                "runner_create_time": 1763650000.0 + pid, "runner_rss_bytes": 10_600_000_000,
                "runner_cpu_percent": cpu, "runner_threads": 18,
            })  # fmt: skip
        ts += timedelta(seconds=5)

    # --- GPU: one NVIDIA GPU read every 5 s (scenario "vram": full in the window); none otherwise
    gpu_rows: list[dict[str, Any]] = []
    ts = t0 - timedelta(minutes=3)
    while "vram" in chosen and ts < telemetry_end:
        used = int(GPU_TOTAL * (0.985 if w0 <= ts < w1 else 0.45))
        gpu_rows.append({"ts": ts, "gpu_index": 0, "gpu_uuid": "GPU-5f1e0c2a", "name": "NVIDIA GeForce RTX 4090",
                         "vendor": "nvidia", "memory_total_bytes": GPU_TOTAL, "memory_used_bytes": used,
                         "memory_free_bytes": GPU_TOTAL - used, "utilization_percent": 35.0, "temperature_c": 61.0,
                         "power_w": 180.0, "source": "nvml"})  # fmt: skip
        ts += timedelta(seconds=5)

    # --- write everything through the real writers
    with TrialWriter(scen.db, background=False, batch_size=100_000) as writer:
        for row in trials:
            writer.add(**row)
    sidecar = Sidecar(scen.sidecar)
    sidecar.write_batch({"host_samples": host_rows, "model_samples": model_rows, "events": sorted(events, key=lambda e: e["ts"]),
                         "gpu_samples": gpu_rows})  # fmt: skip
    with scen.server_log.open("w", encoding="utf-8") as f:
        for _, _, line in sorted(logs.server, key=lambda x: (x[0], x[1])):
            f.write(line + "\n")
    with scen.runner_log.open("w", encoding="utf-8") as f:
        for _, _, line in sorted(logs.harness, key=lambda x: (x[0], x[1])):
            f.write(line + "\n")
    report = ingest_logs(scen.sidecar, server_logs=[scen.server_log], runner_log=scen.runner_log, utc_offset="+00:00")
    scen.counts = {"trials": len(trials), "host_samples": len(host_rows), "model_samples": len(model_rows),
                   "log_rows": report.counts.requests + report.counts.timings}  # fmt: skip
    return scen


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
