"""Preflight's `vram` check: VRAM headroom for the models in use (Linux GPUs; a Mac's unified
memory is the free_memory check's).

- A loaded model whose /api/ps size_vram is below its size is already split between CPU and GPU
  (`ollama ps`: "48%/52% CPU/GPU"): generation runs several times slower; WARN.
- A GPU at 95% of its memory or more has no room for another model, a longer context or another
  parallel slot's KV cache; WARN.
- `--model` not loaded yet, larger than the free VRAM of the GPU with the most free: it will not
  fit and will spill; WARN.
No GPU (NVML, nvidia-smi, rocm-smi all absent) is OK and says so.
"""

from __future__ import annotations

from typing import Any

from oasis_ops.diagnosis import text as t
from oasis_ops.diagnosis.thresholds import VRAM_FULL_RATIO
from oasis_ops.probes.ollama import ModelStatus

OK, WARN = "ok", "warn"


def vram_check(snapshot: Any, statuses: list[ModelStatus] | None, model: str | None,
               model_bytes: int | None, model_loaded: bool) -> tuple[str, str, dict[str, Any]]:  # fmt: skip
    """(level, message, values) from a GpuSnapshot (oasis_ops.probes.gpu)."""
    if snapshot is None or not snapshot.gpus:
        note = f" ({snapshot.note})" if snapshot is not None and snapshot.note else ""
        return OK, f"no GPU found{note}: models run on the CPU (or in unified memory)", {"gpus": []}
    gpus = [{"index": g.index, "name": g.name, "total_bytes": g.memory_total_bytes, "used_bytes": g.memory_used_bytes,
             "free_bytes": g.memory_free_bytes} for g in snapshot.gpus]  # fmt: skip
    values: dict[str, Any] = {"gpus": gpus, "source": snapshot.source}
    problems: list[str] = []
    for status in statuses or []:
        if status.size_bytes and status.size_vram_bytes is not None and status.size_vram_bytes < status.size_bytes:
            share = status.size_vram_bytes / status.size_bytes
            problems.append(f"{status.name} is only {share:.0%} on the GPU ({1 - share:.0%}/{share:.0%} CPU/GPU): it does "
                            "not fit, generation runs several times slower")  # fmt: skip
    for g in snapshot.gpus:
        if g.memory_total_bytes and g.memory_used_bytes is not None and g.memory_used_bytes >= VRAM_FULL_RATIO * g.memory_total_bytes:
            problems.append(f"GPU {g.index} ({g.name}) VRAM {g.memory_used_bytes / g.memory_total_bytes:.0%} used: no room "
                            "for another model, a longer context or another parallel slot")  # fmt: skip
    roomiest = max((g for g in snapshot.gpus if g.memory_free_bytes is not None), key=lambda g: g.memory_free_bytes, default=None)
    free = roomiest.memory_free_bytes if roomiest is not None else None
    values["max_free_vram_bytes"] = free
    if model and model_bytes and not model_loaded and free is not None and model_bytes > free:
        problems.append(f"{model} ({t.size(model_bytes)}) is larger than the most free VRAM on one GPU ({t.size(free)}): "
                        "it will load partly on the CPU")  # fmt: skip
    summary = ", ".join(f"GPU {g.index} {g.name}: {t.size(g.memory_free_bytes)} free of {t.size(g.memory_total_bytes)}"
                        for g in snapshot.gpus)  # fmt: skip
    if problems:
        return WARN, "; ".join(problems) + f" ({summary}, {snapshot.source})", values
    return OK, f"{summary} ({snapshot.source})", values
