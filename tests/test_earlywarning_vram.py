"""The `vram_exhaustion` early warning: each GPU's free VRAM fitted over ten minutes; raised when
it reaches the floor (3% free) within the horizon or is there already, per GPU; silent on a
steady GPU and unable to tell (None) without recent GPU reads (a Mac, a CPU box)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from oasis_ops.earlywarning.inputs import WarningInputs
from oasis_ops.earlywarning.rules import evaluate, vram_exhaustion
from oasis_ops.settings import load_settings

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TOTAL = 24_000_000_000


def gpus(used_at: list[int], index: int = 0, name: str = "NVIDIA A10") -> pd.DataFrame:
    return pd.DataFrame([{"ts": T0 + timedelta(seconds=10 * i), "gpu_index": index, "name": name, "memory_total_bytes": TOTAL,
                          "memory_used_bytes": used, "memory_free_bytes": TOTAL - used} for i, used in enumerate(used_at)])  # fmt: skip


def at(frame: pd.DataFrame) -> tuple[float, WarningInputs]:
    inputs = WarningInputs.from_frames(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), frame)
    return frame["ts"].max().timestamp(), inputs


def test_vram_filling_up_is_forecast_with_its_eta_per_gpu() -> None:
    settings = load_settings(env={})
    # 60 reads over 10 minutes, used climbing 100 MB a read (600 MB/min): from 12 GB to 17.9 GB
    filling = gpus([12_000_000_000 + 100_000_000 * i for i in range(60)])
    steady = gpus([5_000_000_000] * 60, index=1, name="NVIDIA A100")
    t, inputs = at(pd.concat([filling, steady]))
    (found,) = vram_exhaustion(t, inputs, settings)
    assert found.subject == "GPU 0 NVIDIA A10" and found.kind == "vram_exhaustion" and found.action == "pause"
    # 6.1 GB free, floor 0.72 GB, 0.6 GB/min: ~9 minutes: critical (within 15)
    assert 8.5 <= found.evidence["minutes_left"] <= 9.5 and found.severity == "critical"
    assert "VRAM free, falling" in found.message and "spills to the CPU" in found.message
    conditions, unknown = evaluate(t, inputs, settings)
    assert [c.kind for c in conditions] == ["vram_exhaustion"] and "vram_exhaustion" not in unknown


def test_a_full_gpu_is_at_the_floor_now_and_a_steady_one_says_nothing() -> None:
    settings = load_settings(env={})
    t, inputs = at(gpus([int(TOTAL * 0.99)] * 60))
    (found,) = vram_exhaustion(t, inputs, settings)
    assert found.evidence["minutes_left"] == 0 and "VRAM free: a model that needs more spills" in found.message
    t, inputs = at(gpus([int(TOTAL * 0.5)] * 60))
    assert vram_exhaustion(t, inputs, settings) == []


def test_without_recent_gpu_reads_the_rule_cannot_tell() -> None:
    settings = load_settings(env={})
    t, inputs = at(gpus([1] * 60))
    assert vram_exhaustion(t + 600, inputs, settings) is None  # stale: the sampler stopped
    none = WarningInputs.from_frames(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    assert vram_exhaustion(t, none, settings) is None
    assert "vram_exhaustion" in evaluate(t, none, settings)[1]
