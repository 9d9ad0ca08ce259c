"""`vram_spill`: VRAM ran out and the model no longer fits on the GPU.

Ollama then loads part of the model's layers on the CPU: /api/ps's size_vram falls below size
(`ollama ps` prints e.g. "48%/52% CPU/GPU" instead of "100% GPU"), generation slows several-fold
and trials start to time out, while host memory looks fine. Confirmed by a placement signal (the
model's GPU share fell during the window against before it, or a GPU's memory was full) AND a
consequence (generation per token slowed, or the runner's CPU rose): one alone is not enough (a
model loaded partly on the CPU from the start is a choice, not an incident).

Kept apart from the flash-attention spill, which keeps "100% GPU" while the work runs on the CPU:
here the split itself moved.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.checks.context import (
    Finding,
    WindowContext,
    _median,
    _model_rows,
    timing_comparison,
)
from oasis_ops.diagnosis.thresholds import (
    BUSY_CPU_PERCENT,
    CPU_RISE_FACTOR,
    EVAL_SLOWDOWN,
    GPU_SHARE_DROP,
    MODEL_LOOKBACK,
    VRAM_FULL_RATIO,
)


def _gpu_share(rows: pd.DataFrame) -> float | None:
    """Median share of the model's memory on the GPU (size_vram / size) over loaded samples."""
    if not len(rows):
        return None
    loaded = rows[rows["state"] == "loaded"]
    size = pd.to_numeric(loaded["size_bytes"], errors="coerce")
    vram = pd.to_numeric(loaded["size_vram_bytes"], errors="coerce")
    share = (vram / size)[size > 0].dropna()
    return float(share.median()) if len(share) else None


def _full_gpus(ctx: WindowContext) -> list[str]:
    gpus = ctx.telemetry.between(ctx.telemetry.gpus, ctx.start, ctx.end)
    if not len(gpus):
        return []
    out = []
    for (index, name), rows in gpus.groupby(["gpu_index", "name"], dropna=False):
        total = pd.to_numeric(rows["memory_total_bytes"], errors="coerce")
        used = pd.to_numeric(rows["memory_used_bytes"], errors="coerce")
        ratio = (used / total)[total > 0].dropna()
        if len(ratio) and float(ratio.max()) >= VRAM_FULL_RATIO:
            worst = ratio.idxmax()
            out.append(f"GPU {index} ({name}) VRAM {t.size(float(used[worst]))} of {t.size(float(total[worst]))} used "
                       f"({float(ratio.max()):.0%}) in the window")  # fmt: skip
    return out


def check_vram_spill(ctx: WindowContext) -> Finding | None:
    during_rows = _model_rows(ctx, ctx.start, ctx.end)
    before_rows = _model_rows(ctx, ctx.before_start(MODEL_LOOKBACK), ctx.start)
    during, before = _gpu_share(during_rows), _gpu_share(before_rows)
    evidence: list[str] = []
    values: dict[str, Any] = {"gpu_share_before": before, "gpu_share_during": during}
    placement = False
    if during is not None and before is not None and before - during >= GPU_SHARE_DROP:
        placement = True
        evidence.append(f"/api/ps: {during:.0%} of {ctx.model or 'the model'} on the GPU in the window "
                        f"({1 - during:.0%}/{during:.0%} CPU/GPU), {before:.0%} before it")  # fmt: skip
    full = _full_gpus(ctx)
    if full:
        placement = True
        evidence += full
    if not placement:
        return None
    consequence = False
    b_tok, d_tok = (stats["eval_ms_per_token"] for stats in timing_comparison(ctx))
    if b_tok and d_tok and d_tok >= EVAL_SLOWDOWN * b_tok:
        consequence = True
        evidence.append(f"generation slowed: eval {d_tok:,.1f} ms/token median in the window vs {b_tok:,.1f} before "
                        f"({d_tok / b_tok:,.1f}x)")  # fmt: skip
        values.update(eval_ms_per_token_before=b_tok, eval_ms_per_token_during=d_tok)
    cpu_during = _median(during_rows["runner_cpu_percent"]) if len(during_rows) else None
    cpu_before = _median(before_rows["runner_cpu_percent"]) if len(before_rows) else None
    if cpu_during is not None and cpu_during >= BUSY_CPU_PERCENT and (cpu_before is None or cpu_during >= CPU_RISE_FACTOR * max(cpu_before, 1.0)):
        consequence = True
        was = f" (was {cpu_before:.0f}%)" if cpu_before is not None else ""
        evidence.append(f"the runner's CPU rose to {cpu_during:.0f}% (median in the window){was}: layers computed on the CPU")
        values.update(runner_cpu_percent_before=cpu_before, runner_cpu_percent_during=cpu_during)
    if not consequence:
        return None
    return Finding(
        "vram_spill",
        "confirmed",
        0.9 if len(evidence) >= 3 else 0.75,
        evidence,
        "Free VRAM so the model fits on the GPU again: unload other models (`ollama stop <model>`, "
        "OLLAMA_MAX_LOADED_MODELS=1), lower the context (num_ctx) or OLLAMA_NUM_PARALLEL (each parallel slot holds "
        "its own KV cache in VRAM), or use a smaller quantisation; then reload the model. `oasis-ops preflight` "
        "shows the VRAM headroom of the models in use.",
        values,
    )
