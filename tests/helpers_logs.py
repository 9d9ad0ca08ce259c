"""Log line builders and a realistic server.log generator (tests and bench/bench_logs.py).

Line shapes follow tests/fixtures/ollama/*.log (Ollama 0.20 runner and >= 0.30 llama-server);
tests/fixtures/real/ holds the shapes of logs people posted (journald, docker, k8s, Windows...).
`prefixed()` wraps generated lines in a collector's prefix, for tests and the bench.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

BLOB = "/Users/eval/.ollama/models/blobs/sha256-4e30e2665218745ef463f722c0bf86be0cab6ee676320f1cfadf91e989107448"


def go_duration(ms: float) -> str:
    """Format milliseconds the way Go's time.Duration.String() does (enough for tests)."""
    ns = int(round(ms * 1_000_000))
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.3f}".rstrip("0").rstrip(".") + "µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{rest / 1_000_000_000:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def gin_line(local: datetime, status: int, latency_ms: float, path: str = "/api/chat", method: str = "POST") -> str:
    return (
        f"[GIN] {local:%Y/%m/%d - %H:%M:%S} | {status} | {go_duration(latency_ms):>15} |"
        f"       127.0.0.1 | {method:<8} \"{path}\""
    )


def slog_time(local: datetime, offset: str = "+01:00") -> str:
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}{offset}"


def slog_line(local: datetime, msg: str, level: str = "INFO", extra: str = "", offset: str = "+01:00") -> str:
    quoted = msg if msg.isidentifier() else '"' + msg.replace('"', '\\"') + '"'
    tail = f" {extra}" if extra else ""
    return f"time={slog_time(local, offset)} level={level} source=server.go:392 msg={quoted}{tail}"


def timing_block(task: int, prompt_ms: float, prompt_tokens: int, eval_ms: float, eval_tokens: int,
                 encode_ms: float | None = None, decode_ms: float | None = None, slot: int = 0) -> list[str]:  # fmt: skip
    lines = [f"slot launch_slot_: id  {slot} | task {task} | processing task"]
    if encode_ms is not None:
        lines += ["encoding image slice...", f"image slice encoded in {encode_ms:g} ms"]
    if decode_ms is not None:
        lines += ["decoding image batch 1/1, n_tokens_batch = 256", f"image decoded (batch 1/1) in {decode_ms:g} ms"]
    total = prompt_ms + eval_ms
    lines += [
        f"slot print_timing: id  {slot} | task {task} | prompt eval time =  {prompt_ms:10.2f} ms / {prompt_tokens:5d} tokens (    1.29 ms per token,   775.81 tokens per second)",
        f"slot print_timing: id  {slot} | task {task} |        eval time =  {eval_ms:10.2f} ms / {eval_tokens:5d} tokens (   24.81 ms per token,    40.31 tokens per second)",
        f"slot print_timing: id  {slot} | task {task} |       total time =  {total:10.2f} ms / {prompt_tokens + eval_tokens:5d} tokens",
    ]
    return lines


SERVER_CONFIG = (
    'msg="server config" env="map[HTTPS_PROXY: OLLAMA_CONTEXT_LENGTH:4096 OLLAMA_FLASH_ATTENTION:{fa} '
    'OLLAMA_HOST:http://127.0.0.1:11434 OLLAMA_KEEP_ALIVE:5m0s OLLAMA_NUM_PARALLEL:1 '
    'OLLAMA_ORIGINS:[http://localhost https://localhost]]"'
)


def server_log_lines(rng: random.Random, start: datetime, *, offset: str = "+01:00") -> Iterator[str]:
    """An endless, realistic mix: mostly Gin /api/chat and /api/ps lines, a llama-server timing
    block before each chat, occasional slog lines (runner restarts, aborts, load requests)."""
    now = start
    task = 0
    yield f"time={slog_time(now, offset)} level=INFO source=routes.go:1544 " + SERVER_CONFIG.format(fa="true")
    while True:
        now += timedelta(milliseconds=rng.randint(200, 6000))
        roll = rng.random()
        if roll < 0.45:
            prompt_ms, eval_ms = rng.uniform(300, 500), rng.uniform(2000, 6000)
            yield from timing_block(task, prompt_ms, rng.randint(280, 340), eval_ms,
                                    rng.randint(100, 200), encode_ms=rng.choice([17, 18, 19]), decode_ms=rng.randint(38, 46))  # fmt: skip
            task += 1
            # the request encloses its task: its latency is the block's total plus load/queue/relay
            yield gin_line(now, 200, prompt_ms + eval_ms + rng.uniform(20, 2000))
        elif roll < 0.85:
            yield gin_line(now, 200, rng.uniform(0.05, 0.9), "/api/ps", "GET")
        elif roll < 0.93:
            yield gin_line(now, 499, 60000.0)
            yield slog_line(now, "aborting completion request due to client closing the connection", offset=offset)
        elif roll < 0.97:
            yield slog_line(now, "starting runner", extra=f'cmd="/usr/bin/ollama runner --ollama-engine --model {BLOB} --port {rng.randint(40000, 60000)}"', offset=offset)  # fmt: skip
            yield slog_line(now, "load", extra='request="{Operation:commit Parallel:1 BatchSize:512 FlashAttention:Enabled KvSize:4096 GPULayers:35[ID:0 Layers:35(0..34)]}"', offset=offset)  # fmt: skip
            yield slog_line(now, f"llama runner started in {rng.uniform(2, 5):.2f} seconds", offset=offset)
        else:
            yield "llama_model_loader: - kv  12: general.architecture str = gemma3"


def write_server_log(path: Path, target_bytes: int, seed: int = 7, start: datetime | None = None) -> int:
    """Write about `target_bytes` of realistic server.log to `path`; returns the line count."""
    rng = random.Random(seed)
    lines = server_log_lines(rng, start or datetime(2025, 11, 20, 8, 58, 12))
    count = 0
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            written += len(line) + 1
            count += 1
            if len(buf) >= 10_000:
                out.write("\n".join(buf) + "\n")
                buf.clear()
            if written >= target_bytes:
                break
        if buf:
            out.write("\n".join(buf) + "\n")
    return count


def prefixed(lines: Iterator[str], kind: str, start: datetime | None = None) -> Iterator[str]:
    """`lines` as `journalctl -u ollama` ("journald") or `docker logs -t` ("docker") prints them."""
    when = start or datetime(2025, 11, 20, 8, 58, 12)
    for i, line in enumerate(lines):
        stamp = when + timedelta(milliseconds=7 * i)
        if kind == "journald":
            yield f"{stamp:%b %d %H:%M:%S} evalhost ollama[2211]: {line}"
        else:
            yield f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond:06d}123Z {line}"
