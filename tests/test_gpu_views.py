"""GPU memory on the Live chart: gpu_samples (migration 008) bucketed per GPU and drawn as a VRAM
panel on the shared time axis, under free memory; no panel (and no error) without GPU reads,
or on a sidecar from before GPUs were sampled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import altair as alt
import pandas as pd

from oasis_ops.sampler import views
from oasis_ops.sampler.window import live_window
from oasis_ops.sidecar import Sidecar

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TOTAL = 25_757_220_864


def gpu_row(ts: datetime, used: int, index: int = 0, name: str = "NVIDIA GeForce RTX 4090") -> dict[str, object]:
    return {"ts": ts, "gpu_index": index, "gpu_uuid": f"GPU-{index}", "name": name, "vendor": "nvidia", "memory_total_bytes": TOTAL,
            "memory_used_bytes": used, "memory_free_bytes": TOTAL - used, "utilization_percent": 40.0, "temperature_c": 60.0,
            "power_w": 200.0, "source": "nvml"}  # fmt: skip


def test_vram_per_gpu_is_bucketed_by_its_most_used_and_drawn_on_the_shared_axis(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "t.ops.duckdb")
    start = NOW - timedelta(minutes=5)
    rows = [gpu_row(start + timedelta(seconds=2 * i), used=10_000_000_000 + i * 10_000_000) for i in range(150)]
    rows += [gpu_row(start + timedelta(seconds=2 * i), used=2_000_000_000, index=1, name="NVIDIA A10") for i in range(150)]
    rows.append(gpu_row(start + timedelta(seconds=61), used=TOTAL - 100))  # a spike inside minute 1
    sidecar.write_batch({"gpu_samples": rows})
    window = live_window(sidecar, start, NOW, bucket_s=60)
    assert window.has_gpus and sorted(window.gpus["gpu_index"].unique()) == [0, 1]
    first = window.gpus[window.gpus["gpu_index"] == 0]["used_bytes"].tolist()
    assert first[1] == TOTAL - 100 and first[0] == 10_000_000_000 + 29 * 10_000_000  # the most used per bucket
    spec = views.live_chart(views.empty_rollup(start, NOW), window)
    titles = [p["title"]["text"] for p in spec["vconcat"]]
    vram = titles.index("GPU memory used (GB, most per bucket; dashed: total)")
    assert titles[vram - 1].startswith("Free memory") and len(spec["datasets"]["gpus"]) == 10
    assert {r["gpu"] for r in spec["datasets"]["gpus"]} == {"GPU 0 NVIDIA GeForce RTX 4090", "GPU 1 NVIDIA A10"}
    for panel in spec["vconcat"][:-1]:
        assert all(layer["encoding"]["x"]["scale"]["domain"] == {"param": "zoom"} for layer in panel["layer"]), panel["title"]
    alt.VConcatChart.from_dict(spec)  # a valid Vega-Lite spec


def test_no_gpu_reads_no_panel_and_an_old_sidecar_is_no_error(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "t.ops.duckdb")
    sidecar.write_batch({"events": [{"ts": NOW - timedelta(minutes=1), "kind": "loaded", "model": "m", "detail": {}}]})
    window = live_window(sidecar, NOW - timedelta(minutes=5), NOW)
    assert not window.has_gpus
    spec = views.live_chart(views.empty_rollup(window.start, window.end), window)
    assert "gpus" not in spec["datasets"] and not any("GPU" in p["title"]["text"] for p in spec["vconcat"])
    import duckdb

    con = duckdb.connect(str(sidecar.path))
    con.execute("DROP TABLE gpu_samples")  # as a sidecar written before migration 008 would be
    con.execute("DELETE FROM schema_version WHERE version = 8")
    con.close()
    assert live_window(sidecar, NOW - timedelta(minutes=5), NOW).gpus.empty
    assert isinstance(window.gpus, pd.DataFrame)


def test_the_demos_simulated_gpu_is_labelled_on_its_panel(tmp_path: Path) -> None:
    sidecar = Sidecar(tmp_path / "t.ops.duckdb")
    start = NOW - timedelta(minutes=3)
    sidecar.write_batch({"gpu_samples": [{**gpu_row(start + timedelta(seconds=10 * i), used=5 * 10**9), "source": "simulated"}
                                         for i in range(18)]})  # fmt: skip
    window = live_window(sidecar, start, NOW, bucket_s=60)
    assert window.gpu_simulated
    spec = views.live_chart(views.empty_rollup(start, NOW), window)
    assert "GPU memory used (GB, most per bucket; dashed: total) · SIMULATED GPU (demo)" in [p["title"]["text"] for p in spec["vconcat"]]
    real = Sidecar(tmp_path / "r.ops.duckdb")
    real.write_batch({"gpu_samples": [gpu_row(start + timedelta(seconds=10 * i), used=5 * 10**9) for i in range(18)]})
    assert not live_window(real, start, NOW, bucket_s=60).gpu_simulated
