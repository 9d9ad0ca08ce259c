"""`oasis-ops demo replay --out DIR`: the incident day of the write-up, rebuilt as files.

Writes, in seconds and deterministically (seeded):
- DIR/trials.duckdb: the canonical trial table (Contract 1), through the runner-side
  TrialWriter, like a real harness would;
- DIR/trials.ops.duckdb: the telemetry sidecar (Contract 2): host_samples every 10 s following
  the write-up's vm_stat snapshots, model_samples of gemma4:e4b (loaded all day, 100% GPU,
  Stopping from the eviction on, its runner at 99.7% CPU and 10.6 GB RSS), events (loaded,
  pressure level changes, stopping), a stopped sampler_status row, and the two logs ingested
  into the log tables (oasis_ops.logs);
- DIR/server.log: the line formats of Ollama 0.30.6 (server config with OLLAMA_FLASH_ATTENTION:true,
  the llama-server runner start with `--flash-attn on`, its "started in" lines (twice, as Ollama
  prints them), one Gin line per trial, llama-server timing lines with `image slice encoded in
  17 ms` on every model call, the timeouts' abort lines and 500s at 1m0s, the 4m8.239102s
  outlier, the keep_alive=0 unload request);
- DIR/runner.log: the harness's lines (`... trial 12453 ok in 6.09s`, `... timed out after
  1m0s (litellm.Timeout)`, `evicting gemma4:e4b after 3 consecutive stalls (keep_alive=0)`).

Time: the write-up gives wall-clock times without a zone; the replay takes them as UTC
(`utc_offset` "+00:00", the default), so the failure window 17:58-18:04 is 17:58-18:04 everywhere:
in server.log and runner.log, in the databases and on the console's UTC axes. `--utc-offset`
replays the same wall-clock day in another zone: log lines then hold local wall time (slog lines
carry the offset) and the databases hold the same moments in UTC, shifted by the offset.

The day (wall-clock time, 2025-11-20): healthy trials 09:00-17:42 (p50 4.1 s, p95 6.1 s, 6 failures:
0.05%); a gap while memory pressure builds, with a dozen slow trials 17:49-17:58; the failure
window 17:58-18:04 (started_at) with ~98% timeouts at 60 s and the 248,239 ms outlier; the
eviction at 18:04:13 (keep_alive=0) that deadlocks: Stopping until the day ends at 18:15, no
trial after it. The manual kill at 18:24 is after the replayed day and not in it, so the replay
ends with the runner still stuck, as the console would have found it. The write-up's numbers
that cannot all hold together, and which ones were bent, are listed in `BENT_NUMBERS`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from oasis_ops.demo.ollama.servelog import gin_line, go_duration, server_config_env, slog_line
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text
from oasis_ops.logs.timefmt import parse_utc_offset
from oasis_ops.sidecar import Sidecar, heartbeat_row
from oasis_ops.trials.writer import TrialWriter

TRIALS_FILE = "trials.duckdb"
SIDECAR_FILE = "trials.ops.duckdb"
SERVER_LOG = "server.log"
RUNNER_LOG = "runner.log"
OUTPUTS = (TRIALS_FILE, SIDECAR_FILE, SERVER_LOG, RUNNER_LOG)

DAY = date(2025, 11, 20)
UTC_OFFSET = "+00:00"  # the write-up's times, taken as UTC (see the module docstring)
SEED = 20251120
MODEL = "gemma4:e4b"
RUN_ID = "oasis-20251120"
TIMEOUT_ERROR = "timed out after 1m0s (litellm.Timeout)"
CLIENT_ERROR = "litellm.APIConnectionError: OllamaException - unexpected EOF"

# Healthy phase (wall-clock time): p50 4.1 s, p95 6.1 s (lognormal sigma = ln(6.1/4.1)/1.645).
HEALTHY_TRIALS = 12_454  # the write-up's trial 12454 is the last one before 17:42
HEALTHY_FAILURES = (("timeout", 2), ("error", 4))  # 6 of 12,454: 0.05%
P50_MS = 4100.0
SIGMA = math.log(6.1 / 4.1) / 1.645
SLOW_TRIALS = 12  # the gap 17:42-17:58: pressure builds, a few slow trials still land
WINDOW_TIMEOUTS = 366  # see BENT_NUMBERS
WINDOW_OK = 6  # a few trials slip through the window (plus the outlier)
OUTLIER_MS = 248_239.0
EVICT_AT = (18, 4, 13)
DAY_END = (18, 15, 0)
SAMPLE_EVERY_S = 10

# Runner process of the replayed day (the Ollama app's runner on the Mac of the write-up).
RUNNER_PID = 48213
RUNNER_PORT = 53312
MODEL_SIZE = 9_608_425_472
CONTEXT_LENGTH = 4096
BLOB = "/Users/eval/.ollama/models/blobs/sha256-4e30e2665218745ef463f722c0bf86be0cab6ee676320f1cfadf91e989107448"
RUNNER_BIN = "/Applications/Ollama.app/Contents/Resources/llama-server"
MMPROJ = "/Users/eval/.ollama/models/blobs/sha256-1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"
# The replayed server plays an Ollama of the llama-server era, the one whose log has every line the
# write-up leans on (llama-server's per-request timings with the image encoder's 17 ms; 0.20-era
# runners print no timings at INFO). Its lines follow that version's source (see
# oasis_ops/demo/ollama/profiles.py).
OLLAMA_VERSION = "0.30.6"

PAGE_SIZE = 16384
MEM_TOTAL = 55_297_703_936  # hw.memsize of the M2 Max (51.5 GiB)
MIB = 1024 * 1024
HOST_SOURCE = "macos:vm_stat"
# vm_stat/sysctl anchors (wall-clock time). 17:00, 17:45 and 18:00 are tests/fixtures/macos/vm_stat_*.txt
# exactly; 17:30 and 18:15 are the write-up's pages free / swapouts; the other columns there and
# the 09:00 morning are ours. Values between anchors are interpolated (counters stay monotonic).
HOST_ANCHORS: tuple[tuple[tuple[int, int], dict[str, int]], ...] = (
    ((9, 0), dict(pages_free=2_905_117, pages_speculative=52_004, pages_inactive=420_118, pageins=1_402_220,
                  pageouts=0, swapins=0, swapouts=0, swap_used=0, swap_total=1024 * MIB)),
    ((17, 0), dict(pages_free=2_103_449, pages_speculative=40_112, pages_inactive=498_201, pageins=1_820_331,
                   pageouts=3_012, swapins=0, swapouts=0, swap_used=0, swap_total=1024 * MIB)),
    ((17, 30), dict(pages_free=1_220_118, pages_speculative=20_417, pages_inactive=712_090, pageins=1_990_412,
                    pageouts=9_870, swapins=0, swapouts=0, swap_used=0, swap_total=1024 * MIB)),
    ((17, 45), dict(pages_free=412_302, pages_speculative=2_210, pages_inactive=900_340, pageins=2_140_112,
                    pageouts=51_220, swapins=8_101, swapouts=42_118, swap_used=int(640.5 * MIB),
                    swap_total=1024 * MIB)),
    ((18, 0), dict(pages_free=58_402, pages_speculative=1_003, pages_inactive=822_011, pageins=2_611_032,
                   pageouts=220_311, swapins=190_442, swapouts=504_282, swap_used=int(3279.25 * MIB),
                   swap_total=4096 * MIB)),
    ((18, 15), dict(pages_free=58_011, pages_speculative=980, pages_inactive=801_220, pageins=2_902_118,
                    pageouts=311_060, swapins=402_117, swapouts=837_610, swap_used=int(5012.75 * MIB),
                    swap_total=6144 * MIB)),
)
# kern.memorystatus_vm_pressure_level over the day: 1 normal, 2 warn, 4 critical (0/50/100).
PRESSURE_STEPS: tuple[tuple[tuple[int, int], float, str], ...] = (
    ((9, 0), 0.0, "normal"),
    ((17, 38), 50.0, "warn"),
    ((17, 51), 100.0, "critical"),
)

BENT_NUMBERS = (
    "273 timeouts in six minutes cannot come from 4 workers with a 60 s timeout (at most ~24), and "
    "273 + 6 morning failures is not 376. The replay keeps the six-minute window, its ~98% timeouts at "
    "60 s and the day's ~370 failures, so the window holds 366 timeouts (about 61 calls in flight).",
    "The write-up's 12,454 ok / 376 failed become 12,467 ok / 372 failed: trial 12454 is the last one "
    "before the gap (as in runner.log), a dozen slow trials land in the gap, six in the window.",
    "The window is the trials that STARTED 17:58-18:04 (how the Timeline buckets trials); their timeouts "
    "are logged at the end, one minute later (17:59-18:05), not from 17:58:01 as in the write-up's excerpt.",
    "'228 MB free at 18:00' is 58,402 pages x 4096 B: the page size is 16384 on Apple Silicon, so the "
    "replay's host_samples say 957 MB (912 MiB) free.",
    "'6,133 prior trials' is not used: the day has 12,454 trials before 17:42.",
    "Gin truncates latencies over a minute to whole seconds; the outlier keeps the write-up's "
    "4m8.239102s so it matches the trial's 248,239 ms.",
)


@dataclass
class Trial:
    trial_id: int
    started: datetime  # wall-clock at the replay's offset, aware
    latency_ms: float | None
    status: str  # ok | timeout | error
    error: str | None = None
    phase: str = "healthy"  # healthy | slow | window | outlier

    @property
    def finished(self) -> datetime:
        return self.started + timedelta(milliseconds=self.latency_ms if self.latency_ms is not None else 1200.0)


@dataclass
class ReplayResult:
    out_dir: Path
    files: dict[str, Path]
    trials: int
    ok: int
    failed: int
    window: dict[str, Any]
    host_samples: int
    model_samples: int
    events: int
    log_lines: dict[str, int]
    ingested: dict[str, Any] | None
    utc_offset: str
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=lambda: list(BENT_NUMBERS))

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": {k: str(v) for k, v in self.files.items()},
            "trials": self.trials,
            "ok": self.ok,
            "failed": self.failed,
            "window": self.window,
            "host_samples": self.host_samples,
            "model_samples": self.model_samples,
            "events": self.events,
            "log_lines": self.log_lines,
            "ingested": self.ingested,
            "utc_offset": self.utc_offset,
            "elapsed_s": round(self.elapsed_s, 2),
            "bent_numbers": self.notes,
        }


class Day:
    """Wall-clock times of the replayed day, at the replay's UTC offset."""

    def __init__(self, utc_offset: str = UTC_OFFSET, day: date = DAY) -> None:
        tz = parse_utc_offset(utc_offset)
        self.tz: timezone = tz if tz is not None else UTC
        self.day = day

    def at(self, hour: int, minute: int, second: float = 0.0) -> datetime:
        base = datetime(self.day.year, self.day.month, self.day.day, hour, minute, tzinfo=self.tz)
        return base + timedelta(seconds=second)

    @property
    def start(self) -> datetime:
        return self.at(9, 0)

    @property
    def end(self) -> datetime:
        return self.at(*DAY_END)

    @property
    def evict_at(self) -> datetime:
        return self.at(*EVICT_AT)

    @property
    def window(self) -> tuple[datetime, datetime]:
        return self.at(17, 58), self.at(18, 4)

    @property
    def healthy_end(self) -> datetime:
        return self.at(17, 42)


# --- the trials ---------------------------------------------------------------------------------
def build_trials(day: Day, seed: int = SEED) -> list[Trial]:
    """Every trial of the day, in start order, with ids 1..n."""
    rng = np.random.default_rng(seed)
    trials: list[Trial] = []

    # Healthy: evenly spread starts with jitter; the last two are the write-up's runner.log lines
    # (12453 ok in 6.09s at 17:41:58, 12454 ok in 5.22s at 17:42:03).
    pinned = [(day.at(17, 41, 58) - timedelta(seconds=6.09), 6090.0), (day.at(17, 42, 3) - timedelta(seconds=5.22), 5220.0)]
    free = HEALTHY_TRIALS - len(pinned)
    span_s = (pinned[0][0] - day.at(9, 0, 2)).total_seconds()
    spacing = span_s / free
    offsets = (np.arange(free) + rng.uniform(-0.45, 0.45, free)) * spacing
    offsets.sort()
    latencies = P50_MS * np.exp(rng.normal(0.0, SIGMA, free))
    for i in range(free):
        trials.append(Trial(0, day.at(9, 0, 2 + float(offsets[i])), round(float(latencies[i]), 1), "ok"))
    for started, latency in pinned:
        trials.append(Trial(0, started, latency, "ok"))
    failing = rng.choice(np.arange(50, free - 50), size=sum(n for _, n in HEALTHY_FAILURES), replace=False)
    kinds = [kind for kind, n in HEALTHY_FAILURES for _ in range(n)]
    for index, kind in zip(sorted(int(i) for i in failing), kinds, strict=True):
        trial = trials[index]
        trial.status = kind
        if kind == "timeout":
            trial.latency_ms, trial.error = 60_000.0 + round(float(rng.uniform(3, 40)), 1), TIMEOUT_ERROR
        else:
            trial.latency_ms, trial.error = None, CLIENT_ERROR

    # The gap: a dozen trials, slower and slower, as free memory runs out.
    for i in range(SLOW_TRIALS):
        started = day.at(17, 49, 30) + timedelta(seconds=i * 40 + float(rng.uniform(0, 8)))
        latency = 9_000.0 * (45 / 9) ** (i / (SLOW_TRIALS - 1)) * float(rng.uniform(0.9, 1.1))
        trials.append(Trial(0, started, round(latency, 1), "ok", phase="slow"))

    # The window: ~98% timeouts at 60 s; six slow trials slip through; the 248 s outlier.
    w0, w1 = day.window
    width_s = (w1 - w0).total_seconds()
    n_window = WINDOW_TIMEOUTS + WINDOW_OK
    starts = np.sort((np.arange(n_window) + rng.uniform(0.05, 0.95, n_window)) * width_s / n_window)
    ok_slots = set(int(i) for i in rng.choice(np.arange(20, n_window - 20), size=WINDOW_OK, replace=False))
    for i in range(n_window):
        started = w0 + timedelta(seconds=float(starts[i]))
        if i in ok_slots:
            trials.append(Trial(0, started, round(float(rng.uniform(24_000, 57_000)), 1), "ok", phase="window"))
        else:
            trials.append(Trial(0, started, 60_000.0 + round(float(rng.uniform(2, 40)), 1), "timeout", TIMEOUT_ERROR, "window"))
    outlier_end = day.at(18, 4, 12)
    trials.append(Trial(0, outlier_end - timedelta(milliseconds=OUTLIER_MS), OUTLIER_MS, "ok", phase="outlier"))

    trials.sort(key=lambda t: t.started)
    for number, trial in enumerate(trials, start=1):
        trial.trial_id = number
    return trials


def write_trials(path: Path, trials: list[Trial]) -> int:
    """The trial table, written the way a harness should: oasis_ops.trials.writer."""
    writer = TrialWriter(path, batch_size=len(trials) + 1, background=False, memory_limit="256MB", threads=2)
    for t in trials:
        writer.add(
            trial_id=t.trial_id,
            run_id=RUN_ID,
            model=MODEL,
            started_at=t.started.astimezone(UTC),
            finished_at=t.finished.astimezone(UTC),
            latency_ms=t.latency_ms,
            status=t.status,
            error=t.error,
        )
    writer.close()
    return writer.written


# --- the logs -----------------------------------------------------------------------------------
def _timing_lines(task: int, prompt_ms: float, prompt_tokens: int, eval_ms: float, eval_tokens: int) -> list[str]:
    def line(label: str, ms: float, tokens: int, per_token: bool) -> str:
        text = f"slot print_timing: id  0 | task {task} | {label} = {ms:10.2f} ms / {tokens:5d} tokens"
        if per_token and tokens:
            text += f" ({ms / tokens:8.2f} ms per token, {tokens / max(ms, 1e-9) * 1000:8.2f} tokens per second)"
        return text

    return [
        line("prompt eval time", prompt_ms, prompt_tokens, True),
        line("       eval time", eval_ms, eval_tokens, True),
        line("      total time", prompt_ms + eval_ms, prompt_tokens + eval_tokens, False),
    ]


def _launch_lines(task: int, prompt_tokens: int, decode_ms: int) -> list[str]:
    return [
        f"slot launch_slot_: id  0 | task {task} | processing task",
        f"slot update_slots: id  0 | task {task} | new prompt, n_ctx_slot = {CONTEXT_LENGTH}, n_keep = 0, "
        f"task.n_tokens = {prompt_tokens}",
        "encoding image slice...",
        "image slice encoded in 17 ms",  # warm encoder on every call, the failed ones included
        "decoding image batch 1/1, n_tokens_batch = 256",
        f"image decoded (batch 1/1) in {decode_ms} ms",
    ]


def _gin_exact(status: int, latency_s: float, when: datetime, path: str) -> str:
    """A Gin line keeping the latency's fraction even over a minute (the write-up's outlier)."""
    stamp = when.strftime("%Y/%m/%d - %H:%M:%S")
    return f"[GIN] {stamp} | {status:3d} | {go_duration(latency_s):>13} | {'127.0.0.1':>15} | POST     {json.dumps(path)}"


def server_log_lines(day: Day, trials: list[Trial], seed: int = SEED) -> list[str]:
    """server.log of the day, in time order (wall-clock time at the offset; slog lines carry it)."""
    rng = np.random.default_rng(seed + 1)
    events: list[tuple[datetime, int, list[str]]] = []
    env = {
        "HTTPS_PROXY": "", "HTTP_PROXY": "", "NO_PROXY": "", "OLLAMA_CONTEXT_LENGTH": "4096",
        "OLLAMA_DEBUG": "INFO", "OLLAMA_FLASH_ATTENTION": "true", "OLLAMA_GPU_OVERHEAD": "0",
        "OLLAMA_HOST": "http://127.0.0.1:11434", "OLLAMA_KEEP_ALIVE": "5m0s", "OLLAMA_KV_CACHE_TYPE": "",
        "OLLAMA_LLM_LIBRARY": "", "OLLAMA_LOAD_TIMEOUT": "5m0s", "OLLAMA_MAX_LOADED_MODELS": "0",
        "OLLAMA_MAX_QUEUE": "512", "OLLAMA_MODELS": "/Users/eval/.ollama/models", "OLLAMA_NOHISTORY": "false",
        "OLLAMA_NOPRUNE": "false", "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_ORIGINS": "[http://localhost https://localhost]", "OLLAMA_SCHED_SPREAD": "false",
    }  # fmt: skip
    t = day.at(8, 58, 12.004)
    runner_cmd = (f"{RUNNER_BIN} --model {BLOB} --port {RUNNER_PORT} --host 127.0.0.1 --no-webui --offline -c 4096 -np 1 "
                  f"--log-verbosity 4 --no-log-prefix --no-log-timestamps --mmproj {MMPROJ} --flash-attn on")
    events.append((t, 0, [
        slog_line("INFO", "routes.go:1919", "server config", {"env": server_config_env(env)}, when=t),
        slog_line("INFO", "images.go:477", "total blobs: 7", when=t + timedelta(milliseconds=1)),
        slog_line("INFO", "routes.go:1977", f"Listening on 127.0.0.1:11434 (version {OLLAMA_VERSION})",
                  when=t + timedelta(milliseconds=2)),
    ]))
    t = day.at(8, 59, 58.211)
    events.append((t, 0, [
        slog_line("INFO", "server.go:109", "using llama-server for model", {"model": BLOB}, when=t),
        slog_line("INFO", "llama_server.go:400", "starting llama-server", {"cmd": runner_cmd}, when=t),
        slog_line("INFO", "llama_server.go:1044", "waiting for llama-server to start responding", when=t + timedelta(milliseconds=4)),
        "llama_context: flash_attn    = enabled",
        slog_line("INFO", "llama_server.go:1118", "llama-server started in 3.71 seconds", when=day.at(9, 0, 1.920)),
        slog_line("INFO", "sched.go:728", "loaded runners", {"count": 1}, when=day.at(9, 0, 1.921)),
        # the scheduler's load goroutine waits for the runner a second time: both lines again
        slog_line("INFO", "llama_server.go:1044", "waiting for llama-server to start responding", when=day.at(9, 0, 1.921)),
        slog_line("INFO", "llama_server.go:1118", "llama-server started in 3.71 seconds", when=day.at(9, 0, 1.922)),
    ]))
    for index, trial in enumerate(trials):
        task = 2 * index
        if trial.status == "error":
            # The call failed before reaching the runner: no runner lines, a 500 from the API.
            events.append((trial.started + timedelta(seconds=1.2), 2, [
                gin_line(500, 1.19 + float(rng.uniform(0, 0.05)), "127.0.0.1", "POST", "/api/chat",
                         when=trial.started + timedelta(seconds=1.2))]))
            continue
        prompt_tokens = int(rng.integers(296, 330))
        decode_ms = int(rng.integers(38, 47))
        events.append((trial.started + timedelta(milliseconds=5), 1, _launch_lines(task, prompt_tokens, decode_ms)))
        assert trial.latency_ms is not None
        api_s = trial.latency_ms / 1000.0 - float(rng.uniform(0.004, 0.02))  # the client adds a little
        prompt_ms = 17 + decode_ms + float(rng.uniform(300, 360))
        end = trial.finished
        if trial.status == "timeout":
            # The client gave up at 60 s while its request waited for the runner's one slot: Ollama
            # logs the abort, then Gin a 500 (not 499: that is for a cancel during a load). The stuck
            # generation's timing block is printed at that moment (a liberty: it ties the encoder's
            # 17 ms to the failed call in time); it shows the generation crawling, not the encoder.
            eval_tokens = int(rng.integers(2, 9))
            lines = _timing_lines(task, prompt_ms, prompt_tokens, trial.latency_ms - prompt_ms - 40, eval_tokens)
            lines.append(slog_line("INFO", "llama_server.go:1291", "aborting completion request due to client closing the connection",
                                   when=end))
            lines.append(gin_line(500, 60.0 + float(rng.uniform(0.0, 0.03)), "127.0.0.1", "POST", "/api/chat", when=end))
        else:
            eval_tokens = int(rng.integers(120, 170))
            lines = _timing_lines(task, prompt_ms, prompt_tokens, max(1.0, api_s * 1000 - prompt_ms - 25), eval_tokens)
            if trial.phase == "outlier":
                lines.append(_gin_exact(200, 248.239102, end, "/api/chat"))
            else:
                lines.append(gin_line(200, api_s, "127.0.0.1", "POST", "/api/chat", when=end))
        events.append((end, 2, lines))
    # The eviction (keep_alive=0 answered at once), then people looking at `ollama ps`.
    evict = day.evict_at
    events.append((evict, 3, [gin_line(200, 88.112e-6, "127.0.0.1", "POST", "/api/generate", when=evict)]))
    for moment, micros in (((18, 4, 15), 290.004), ((18, 6, 41), 301.7), ((18, 11, 2), 276.52), ((18, 14, 47), 288.9)):
        when = day.at(*moment)
        events.append((when, 3, [gin_line(200, micros * 1e-6, "127.0.0.1", "GET", "/api/ps", when=when)]))
    events.sort(key=lambda e: (e[0], e[1]))
    return [line for _, _, lines in events for line in lines]


def runner_log_lines(day: Day, trials: list[Trial]) -> list[str]:
    """The harness's runner.log: one line per finished trial, plus the eviction (wall-clock time)."""
    entries: list[tuple[datetime, str]] = []
    for t in trials:
        if t.status == "ok":
            assert t.latency_ms is not None
            message = f"trial {t.trial_id} ok in {t.latency_ms / 1000:.2f}s"
        elif t.status == "timeout":
            message = f"trial {t.trial_id} {TIMEOUT_ERROR}"
        else:
            message = f"trial {t.trial_id} failed: {t.error}"
        entries.append((t.finished, message))
    entries.append((day.evict_at, f"evicting {MODEL} after 3 consecutive stalls (keep_alive=0)"))
    entries.sort(key=lambda e: e[0])
    return [f"{when:%Y-%m-%d %H:%M:%S} {message}" for when, message in entries]


# --- the sidecar --------------------------------------------------------------------------------
def _interpolate(day: Day, when: datetime) -> dict[str, int]:
    anchors = [(day.at(*hm), values) for hm, values in HOST_ANCHORS]
    if when <= anchors[0][0]:
        return dict(anchors[0][1])
    for (t0, v0), (t1, v1) in zip(anchors, anchors[1:], strict=False):
        if when <= t1:
            f = (when - t0) / (t1 - t0)
            return {k: int(round(v0[k] + (v1[k] - v0[k]) * f)) for k in v0}
    return dict(anchors[-1][1])


def _pressure(day: Day, when: datetime) -> tuple[float, str]:
    value, label = PRESSURE_STEPS[0][1], PRESSURE_STEPS[0][2]
    for hm, v, name in PRESSURE_STEPS:
        if when >= day.at(*hm):
            value, label = v, name
    return value, label


def host_rows(day: Day, seed: int = SEED) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed + 2)
    anchor_times = {day.at(*hm) for hm, _ in HOST_ANCHORS}
    rows = []
    when = day.start
    while when <= day.end:
        v = _interpolate(day, when)
        if when not in anchor_times and when < day.at(17, 0):
            v["pages_free"] = int(v["pages_free"] * (1 + float(rng.normal(0, 0.004))))  # desktop noise
        pressure, _ = _pressure(day, when)
        rows.append({
            "ts": when.astimezone(UTC),
            "mem_total_bytes": MEM_TOTAL,
            "mem_free_bytes": v["pages_free"] * PAGE_SIZE,
            "mem_available_bytes": (v["pages_free"] + v["pages_speculative"] + v["pages_inactive"]) * PAGE_SIZE,
            "page_size": PAGE_SIZE,
            "pages_free": v["pages_free"],
            "pages_speculative": v["pages_speculative"],
            "swap_total_bytes": v["swap_total"],
            "swap_used_bytes": v["swap_used"],
            "pageins": v["pageins"],
            "pageouts": v["pageouts"],
            "swapins": v["swapins"],
            "swapouts": v["swapouts"],
            "pressure": pressure,
            "source": HOST_SOURCE,
        })
        when += timedelta(seconds=SAMPLE_EVERY_S)
    return rows


def model_rows(day: Day, seed: int = SEED) -> list[dict[str, Any]]:
    """gemma4:e4b every 10 s: loaded (100% GPU, the runner busy on the CPU: the flash-attention
    spill), then Stopping from the eviction on, the runner pegged at 99.7% and 10.6 GB."""
    rng = np.random.default_rng(seed + 3)
    created = day.at(8, 59, 58, ).timestamp() + 0.211
    evict = day.evict_at + timedelta(milliseconds=212)
    rows = []
    when = day.at(9, 0, 10)
    while when <= day.end:
        stopping = when >= evict
        if when < day.healthy_end:
            progress = (when - day.start) / (day.healthy_end - day.start)
            rss = 9.35e9 + 0.45e9 * progress
            cpu = 82.0 + float(rng.normal(0, 4))
        elif when < day.window[0]:
            progress = (when - day.healthy_end) / (day.window[0] - day.healthy_end)
            rss = 9.8e9 + 0.6e9 * progress
            cpu = 90.0 + 7.0 * progress + float(rng.normal(0, 1.5))
        elif not stopping:
            rss = 10.4e9 + 0.2e9 * (when - day.window[0]) / (evict - day.window[0])
            cpu = 99.0 + float(rng.normal(0, 0.4))
        else:
            rss = 10.6e9 + float(rng.normal(0, 3e6))
            cpu = 99.7 + float(rng.normal(0, 0.15))
        expires = evict if stopping else when + timedelta(minutes=5)
        rows.append({
            "ts": when.astimezone(UTC),
            "model": MODEL,
            "state": "stopping" if stopping else "loaded",
            "expires_at": expires.astimezone(UTC),
            "stopping_since": evict.astimezone(UTC) if stopping else None,
            "size_bytes": MODEL_SIZE,
            "size_vram_bytes": MODEL_SIZE,  # 100% GPU, though the graph runs on the CPU
            "processor": "100% GPU",
            "context_length": CONTEXT_LENGTH,
            "runner_pid": RUNNER_PID,
            "runner_create_time": created,
            "runner_rss_bytes": int(rss),
            "runner_cpu_percent": round(min(cpu, 100.0), 1),
            "runner_threads": 17,
        })
        when += timedelta(seconds=SAMPLE_EVERY_S)
    return rows


def event_rows(day: Day, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = models[0]
    evict = day.evict_at + timedelta(milliseconds=212)
    stopped = next(r for r in models if r["state"] == "stopping")
    rows: list[dict[str, Any]] = [
        {"ts": first["ts"], "kind": "loaded", "model": MODEL,
         "detail": {"from": None, "expires_at": first["expires_at"].isoformat(), "stopping_since": None,
                    "processor": "100% GPU", "runner_pid": RUNNER_PID, "runner_rss_bytes": first["runner_rss_bytes"],
                    "runner_cpu_percent": first["runner_cpu_percent"]}},
    ]
    previous = "normal"
    for hm, value, label in PRESSURE_STEPS[1:]:
        rows.append({"ts": day.at(*hm).astimezone(UTC), "kind": "pressure", "model": None,
                     "detail": {"from": previous, "to": label, "pressure": value, "source": HOST_SOURCE}})
        previous = label
    rows.append({"ts": evict.astimezone(UTC) + timedelta(seconds=1), "kind": "stopping", "model": MODEL,
                 "detail": {"from": "loaded", "expires_at": evict.astimezone(UTC).isoformat(),
                            "stopping_since": evict.astimezone(UTC).isoformat(), "processor": "100% GPU",
                            "runner_pid": RUNNER_PID, "runner_rss_bytes": stopped["runner_rss_bytes"],
                            "runner_cpu_percent": stopped["runner_cpu_percent"]}})
    rows.sort(key=lambda r: r["ts"])
    return rows


def write_sidecar(path: Path, day: Day, seed: int = SEED) -> tuple[int, int, int]:
    hosts = host_rows(day, seed)
    models = model_rows(day, seed)
    events = event_rows(day, models)
    start, end = day.start.astimezone(UTC), day.end.astimezone(UTC)
    status = heartbeat_row(pid=RUNNER_PID - 311, host="eval-mbp.local", started_at=start, last_tick_at=end,
                           ticks=len(hosts), errors=0, interval_s=float(SAMPLE_EVERY_S), stopped_at=end, now=end)
    Sidecar(path).write_batch({"host_samples": hosts, "model_samples": models, "events": events, "sampler_status": [status]})
    return len(hosts), len(models), len(events)


# --- all of it ----------------------------------------------------------------------------------
def _write_lines(path: Path, lines: list[str]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_replay(
    out_dir: str | os.PathLike[str],
    *,
    utc_offset: str = UTC_OFFSET,
    seed: int = SEED,
    ingest: bool = True,
    force: bool = False,
) -> ReplayResult:
    """Write the replay into `out_dir` (created). Existing outputs need `force` (they are replaced
    whole: everything is written in a scratch directory first, then moved in)."""
    started = time.monotonic()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not force:
        raise UsageError(f"{out} already holds a replay ({', '.join(existing)})", hint="pass --force to replace it")
    day = Day(utc_offset)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / f".replay-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        trials = build_trials(day, seed)
        write_trials(scratch / TRIALS_FILE, trials)
        server_lines = server_log_lines(day, trials, seed)
        runner_lines = runner_log_lines(day, trials)
        _write_lines(scratch / SERVER_LOG, server_lines)
        _write_lines(scratch / RUNNER_LOG, runner_lines)
        n_host, n_model, n_events = write_sidecar(scratch / SIDECAR_FILE, day, seed)
        ingested: dict[str, Any] | None = None
        if ingest:
            from oasis_ops.logs.ingest import ingest_logs

            report = ingest_logs(scratch / SIDECAR_FILE, server_logs=[scratch / SERVER_LOG],
                                 runner_log=scratch / RUNNER_LOG, utc_offset=utc_offset)
            ingested = report.as_dict() if hasattr(report, "as_dict") else None
        # The files of a day that ended at 18:15 were last written then.
        ended = day.end.timestamp()
        for name in OUTPUTS:
            os.utime(scratch / name, (ended, ended))
        for name in OUTPUTS:
            for leftover in (out / name, out / f"{name}.wal"):
                leftover.unlink(missing_ok=True)
            os.replace(scratch / name, out / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    w0, w1 = day.window
    in_window = [t for t in trials if w0 <= t.started < w1]
    timeouts = sum(t.status == "timeout" for t in in_window)
    return ReplayResult(
        out_dir=out,
        files={name: out / name for name in OUTPUTS},
        trials=len(trials),
        ok=sum(t.status == "ok" for t in trials),
        failed=sum(t.status != "ok" for t in trials),
        window={"start_utc": w0.astimezone(UTC).isoformat(), "end_utc": w1.astimezone(UTC).isoformat(),
                "start_local": w0.isoformat(), "end_local": w1.isoformat(), "trials": len(in_window),
                "timeouts": timeouts, "timeout_rate": round(timeouts / len(in_window), 4)},
        host_samples=n_host,
        model_samples=n_model,
        events=n_events,
        log_lines={SERVER_LOG: len(server_lines), RUNNER_LOG: len(runner_lines)},
        ingested=ingested,
        utc_offset=utc_offset,
        elapsed_s=time.monotonic() - started,
    )


# --- CLI: `oasis-ops demo replay` -----------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write trials.duckdb, trials.ops.duckdb, server.log, runner.log")
    parser.add_argument("--utc-offset", default=UTC_OFFSET,
                        help=f"zone of the write-up's wall-clock times in the logs (default {UTC_OFFSET}: log and database times agree)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the random draws (default: the same day every time)")
    parser.add_argument("--no-ingest", action="store_true", help="do not ingest the two logs into the sidecar's log tables")
    parser.add_argument("--force", action="store_true", help="replace a replay already in --out")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    parse_utc_offset(args.utc_offset)  # a bad offset is a ConfigError before anything is written
    result = write_replay(args.out, utc_offset=args.utc_offset, seed=args.seed, ingest=not args.no_ingest, force=args.force)
    if args.json:
        print(json_text(result.as_dict(), indent=2))
        return 0
    w = result.window
    print(f"incident replay written to {result.out_dir} in {result.elapsed_s:.1f} s")
    print(f"  trials: {result.trials:,} ({result.ok:,} ok, {result.failed:,} failed)")
    start_utc, end_utc = datetime.fromisoformat(w["start_utc"]), datetime.fromisoformat(w["end_utc"])
    local = ""
    if start_utc.utcoffset() != datetime.fromisoformat(w["start_local"]).utcoffset():
        local = f" ({w['start_local'][11:16]}–{w['end_local'][11:16]} at {result.utc_offset} in the logs)"
    print(f"  failure window (trials started) {start_utc:%Y-%m-%d %H:%M}–{end_utc:%H:%M} UTC{local}: "
          f"{w['timeouts']} of {w['trials']} timed out ({w['timeout_rate']:.1%})")
    print(f"  sidecar: {result.host_samples:,} host samples, {result.model_samples:,} model samples, {result.events} events")
    print(f"  browse it: oasis-ops dashboard --db {result.files[TRIALS_FILE]}")
    return 0
