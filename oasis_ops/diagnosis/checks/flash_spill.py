"""`flash_attention_cpu_spill`: flash attention on (the newest server.log line that says so; or
unset on Apple Silicon, where Ollama turns it on for gemma) AND either the runner's CPU high
while the split says 100% GPU, or generation (eval ms per token) slowing while the image
encoder stays as fast as before.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import (
    Finding,
    WindowContext,
    _detail,
    _median,
    _model_rows,
    apple_silicon,
    timing_comparison,
)
from oasis_ops.diagnosis.thresholds import (
    BUSY_CPU_PERCENT,
    ENCODER_WARM_RATIO,
    EVAL_SLOWDOWN,
    MODEL_LOOKBACK,
)
from oasis_ops.probes.flash import model_flash_attention
from oasis_ops.probes.gguf import gguf_architecture
from oasis_ops.probes.processes import blob_from_manifest, blob_key, default_models_dir


def flash_setting(ctx: WindowContext) -> tuple[bool | None, str]:
    """(on?, where we read it) for the window's model, answered by the one flash-attention
    resolver (oasis_ops.probes.flash) from what server.log said before the window's end: its
    flash statements, the model's runner spawn (command line, blob) and Ollama's version; the
    architecture from the blob's GGUF header when the blob is on this machine."""
    config = ctx.telemetry.config_before(ctx.end)
    rows = list(zip(config["kind"], config["msg"], config["detail"], strict=False)) if len(config) else []
    statements: list[dict[str, Any]] = []
    spawns: list[dict[str, Any]] = []
    version: str | None = None
    for kind, msg, raw in rows:
        detail = _detail(raw)
        if detail.get("flash_source"):
            statements.append({"value": detail.get("flash_attention"), "source": detail.get("flash_source"),
                               "model": detail.get("model"), "evidence": detail.get("flash_evidence")})  # fmt: skip
        if kind == "runner_start" and detail.get("model"):
            spawns.append(detail)
        found = re.search(r"\(version ([^)]+)\)", str(msg or ""))
        if found:
            version = found.group(1)
    spawn = _window_spawn(ctx, spawns)
    blob = str(spawn["model"]) if spawn else None
    architecture = gguf_architecture(blob) if blob and os.path.isfile(blob) else None
    setting = model_flash_attention(
        runner_cmdline=str(spawn.get("cmd") or "").split() or None if spawn else None,
        blob=blob, architecture=architecture, version=version, statements=statements,
    )  # fmt: skip
    where = f"{setting.source}: {setting.detail}"
    if setting.value is None:
        if apple_silicon(ctx.telemetry.host):
            return True, f"{where}; on Apple Silicon Ollama's defaults turn it on for gemma models"
        return None, where
    return setting.value == "on", where


def _window_spawn(ctx: WindowContext, spawns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The runner spawn of the window's model: the newest whose blob is that model's (from the
    manifest under ollama_models), else the newest spawn."""
    if not spawns:
        return None
    if ctx.model:
        blob = blob_from_manifest(default_models_dir(ctx.settings.ollama_models or None), ctx.model)
        if blob:
            mine = [s for s in spawns if blob_key(str(s["model"])) == blob_key(blob)]
            if mine:
                return mine[-1]
    return spawns[-1]


def check_flash_spill(ctx: WindowContext, memory_confirmed: bool) -> Finding | None:
    on, where = flash_setting(ctx)
    if not on:
        return None
    inferred = where.startswith(("version default", "unknown"))  # not stated by the log: a default
    evidence = [f"flash attention on ({where})"]
    values: dict[str, Any] = {"flash_attention": True, "flash_source": where}
    # (a) runner CPU high while the memory split says 100% GPU
    cpu_sig = False
    rows = _model_rows(ctx, ctx.start, ctx.end)
    if len(rows):
        loaded = rows[rows["state"] == "loaded"]
        size = pd.to_numeric(loaded["size_bytes"], errors="coerce")
        vram = pd.to_numeric(loaded["size_vram_bytes"], errors="coerce")
        gpu = loaded[(size > 0) & (vram == size)]
        cpu = _median(gpu["runner_cpu_percent"]) if len(gpu) else None
        if cpu is not None and cpu >= BUSY_CPU_PERCENT:
            cpu_sig = True
            earlier = _model_rows(ctx, ctx.before_start(MODEL_LOOKBACK), ctx.start)
            cpu_before = _median(earlier[earlier["state"] == "loaded"]["runner_cpu_percent"]) if len(earlier) else None
            before_txt = f"; {cpu_before:.0f}% before the window" if cpu_before is not None else ""
            pid = pd.to_numeric(gpu["runner_pid"], errors="coerce").dropna()
            who = f"runner pid {int(pid.iloc[-1])}" if len(pid) else "the runner"
            evidence.append(
                f"{who} at {cpu:.0f}% CPU (median, {t.span(ctx.start, ctx.end)} UTC, {len(gpu)} samples) while /api/ps "
                f"reported 100% GPU (size_vram = size = {t.size(float(size[gpu.index].iloc[-1]))}){before_txt}"
            )
            values.update(runner_cpu_percent_median=cpu, runner_cpu_percent_before=cpu_before, processor="100% GPU")
    # (b) generation slowing while the encoder stays warm
    gen_sig = False
    before, during = timing_comparison(ctx)
    b_tok, d_tok = before["eval_ms_per_token"], during["eval_ms_per_token"]
    b_enc, d_enc = before["encode_ms"], during["encode_ms"]
    if b_tok and d_tok and b_enc and d_enc and d_tok >= EVAL_SLOWDOWN * b_tok and d_enc <= ENCODER_WARM_RATIO * b_enc + 5:
        gen_sig = True
        evidence.append(
            f"generation slowed: eval {d_tok:,.1f} ms/token median in the window vs {b_tok:,.1f} ms/token before "
            f"({d_tok / b_tok:,.1f}x), while the image encoder stayed at {d_enc:.0f} ms ({b_enc:.0f} ms before)"
        )
        values.update(eval_ms_per_token_before=b_tok, eval_ms_per_token_during=d_tok, encode_ms_before=b_enc, encode_ms_during=d_enc)
    if not (cpu_sig or gen_sig):
        return None
    confidence = 0.6 + (0.2 if cpu_sig else 0.0) + (0.15 if gen_sig else 0.0) - (0.15 if inferred else 0.0)
    if gen_sig and not cpu_sig and memory_confirmed:
        confidence -= 0.2
        evidence.append("memory pressure alone can also slow generation: the runner-CPU signature is missing")
    return Finding(
        "flash_attention_cpu_spill",
        "confirmed",
        max(0.3, min(0.95, confidence)),
        evidence,
        "Turn flash attention off and restart Ollama: `launchctl setenv OLLAMA_FLASH_ATTENTION 0`, quit and reopen "
        "Ollama (Linux: set OLLAMA_FLASH_ATTENTION=0 in the service's environment); `oasis-ops preflight` checks it. "
        "Upstream: ollama issues #15368 and #15634 (100% GPU reported while the graph runs on the CPU).",
        values,
    )
