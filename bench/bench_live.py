"""Live page benchmark: the server-side cost of one refresh, and the process's RSS over many.

One refresh = what the Live page computes on a rerun with cold Streamlit caches: the trial
source's refresh and the window's per-minute rollup (10M trials), the header's sidecar reads,
the window's telemetry buckets and markers (1M host samples + 1M model samples in the sidecar),
and the chart's Vega-Lite spec built and serialized (what st.vega_lite_chart sends). Measured in a fresh
child process so its RSS is its own; `now` moves 5 s per refresh, as a page left open does.

    .venv/bin/python -m bench live          # BENCH_QUICK=1: 1M trials, 100k telemetry rows
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import cache_dir, quick, run_child, used, write_result

TARGETS = {"refresh_ms": 100.0, "rss_mb": 300.0}
WINDOW_MIN = 30


def sizes() -> tuple[int, int]:
    return (1_000_000, 100_000) if quick() else (10_000_000, 1_000_000)


def telemetry_sidecar(n_rows: int, end: datetime) -> Path:
    """A sidecar with n host samples (1 Hz) and n model samples ending at `end`, plus events."""
    import numpy as np
    import pandas as pd

    from oasis_ops.sidecar import Sidecar

    path = cache_dir() / f"telemetry_{n_rows}_{int(end.timestamp())}.ops.duckdb"
    if path.exists():
        return used(path)
    tmp = path.with_suffix(".tmp.duckdb")
    tmp.unlink(missing_ok=True)
    started = time.perf_counter()
    sidecar = Sidecar(tmp)
    rng = np.random.default_rng(3)
    chunk = 200_000
    start = end - timedelta(seconds=n_rows)
    for offset in range(0, n_rows, chunk):
        n = min(chunk, n_rows - offset)
        ts = pd.date_range(start + timedelta(seconds=offset), periods=n, freq="1s", tz="UTC")
        pages = (2_000_000 - (np.arange(offset, offset + n) % 100_000) * 19).astype("int64")
        swapouts = (np.arange(offset, offset + n) // 3).astype("int64")
        host = pd.DataFrame({"ts": ts, "mem_total_bytes": 51_539_607_552, "mem_free_bytes": pages * 16384,
                             "mem_available_bytes": pages * 16384 + 4_000_000_000, "page_size": 16384, "pages_free": pages,
                             "swap_used_bytes": swapouts * 16384, "swapins": swapouts // 10, "swapouts": swapouts,
                             "pressure": rng.uniform(0, 60, n).round(1), "source": "macos:vm_stat"})  # fmt: skip
        models = pd.DataFrame({"ts": ts, "model": "gemma4:e4b", "state": "loaded", "size_bytes": 9_600_000_000,
                               "size_vram_bytes": 9_600_000_000, "processor": "100% GPU", "context_length": 8192,
                               "runner_pid": 4242, "runner_create_time": 1.0, "runner_rss_bytes": 10_600_000_000,
                               "runner_cpu_percent": rng.uniform(5, 100, n).round(1), "runner_threads": 12})  # fmt: skip
        sidecar.write_batch({"host_samples": host, "model_samples": models})
    events = [{"ts": start + timedelta(seconds=s), "kind": kind, "model": "gemma4:e4b", "detail": {"from": None}}
              for s, kind in [(10, "loaded"), (n_rows - 900, "stopping"), (n_rows - 300, "gone"), (n_rows - 200, "loaded")]]  # fmt: skip
    sidecar.write_batch({"events": events})
    tmp.rename(path)
    print(f"  generated a sidecar with {n_rows:,} host + {n_rows:,} model samples in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def measure(trials_db: str, sidecar_db: str, refreshes: int) -> dict[str, Any]:
    from oasis_ops.sampler import views
    from oasis_ops.settings import load_settings
    from oasis_ops.sidecar import Sidecar
    from oasis_ops.trials import TrialSource

    with tempfile.TemporaryDirectory(prefix="oasis-bench-live-") as tmp:
        settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(Path(tmp) / "snapshots")})
        rss_start = _rss_mb()
        source = TrialSource(trials_db, settings)
        sidecar = Sidecar(sidecar_db, settings)
        bounds = source.time_bounds()
        assert bounds is not None
        end = bounds[1]
        # First refresh: cold (imports warmed by TrialSource above, caches empty).
        started = time.perf_counter()
        views.build_live_view(source, sidecar, WINDOW_MIN, end)
        cold_ms = (time.perf_counter() - started) * 1000.0
        parts: dict[str, list[float]] = {"total": [], "trials": [], "header": [], "window": [], "chart": [], "charts_fragment": []}
        rss: list[float] = []
        for i in range(refreshes):
            now = end + timedelta(seconds=5 * (i + 1))
            t0 = time.perf_counter()
            source.refresh()
            rollup = source.rollup(now - timedelta(minutes=WINDOW_MIN), now, "1m")
            t1 = time.perf_counter()
            views.live_header(sidecar, now)
            t2 = time.perf_counter()
            window = views.live_window(sidecar, now - timedelta(minutes=WINDOW_MIN), now)
            t3 = time.perf_counter()
            json.dumps(views.live_chart(rollup, window))  # the spec st.vega_lite_chart sends
            t4 = time.perf_counter()
            # the page reruns its header fragment (every 5 s) and its charts fragment (trials, window,
            # chart; every 10 s) separately: "total" is a whole-page rerun, both at once
            for name, value in zip(parts, (t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, (t1 - t0) + (t4 - t2)), strict=True):
                parts[name].append(value * 1000.0)
            rss.append(_rss_mb())
        source.close()
    half = rss[len(rss) // 2 :]
    slope = statistics.linear_regression(range(len(half)), half).slope * 100 if len(half) > 2 else 0.0
    return {
        "refreshes": refreshes,
        "cold_ms": cold_ms,
        **{f"{k}_median_ms": statistics.median(v) for k, v in parts.items()},
        "total_p95_ms": sorted(parts["total"])[int(0.95 * (len(parts["total"]) - 1))],
        "rss_start_mb": rss_start,
        "rss_first_mb": rss[0],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "rss_slope_mb_per_100": slope,
    }


def main() -> int:
    from bench.bench_rollup import dataset

    n_trials, n_telemetry = sizes()
    trials = dataset(n_trials)
    with tempfile.TemporaryDirectory(prefix="oasis-bench-live-") as tmp:
        work_db = Path(tmp) / "trials.duckdb"
        shutil.copyfile(trials, work_db)
        from oasis_ops.settings import load_settings
        from oasis_ops.trials import TrialSource

        with TrialSource(work_db, load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(Path(tmp) / "s")})) as src:
            bounds = src.time_bounds()
        assert bounds is not None
        sidecar = telemetry_sidecar(n_telemetry, bounds[1].replace(microsecond=0))
        refreshes = 100 if quick() else 500
        print(f"  {refreshes} refreshes of the Live page's data and chart ({n_trials:,} trials, {n_telemetry:,}+{n_telemetry:,} telemetry rows) ...", flush=True)
        r = run_child("bench.bench_live", "--measure", str(work_db), str(sidecar), str(refreshes), timeout=1800)
    print(f"{'trials':>11} {'telemetry':>10} {'refresh':>9} {'p95':>8} {'cold':>8} | {'trials':>7} {'header':>7} {'window':>7} {'chart':>7} | "
          f"{'RSS first':>9} {'last':>7} {'max':>7} {'slope/100':>9}")  # fmt: skip
    print(f"{n_trials:>11,} {n_telemetry:>10,} {r['total_median_ms']:>7.1f}ms {r['total_p95_ms']:>6.1f}ms {r['cold_ms']:>6.0f}ms | "
          f"{r['trials_median_ms']:>5.1f}ms {r['header_median_ms']:>5.1f}ms {r['window_median_ms']:>5.1f}ms {r['chart_median_ms']:>5.1f}ms | "
          f"{r['rss_first_mb']:>7.0f}MB {r['rss_last_mb']:>5.0f}MB {r['rss_max_mb']:>5.0f}MB {r['rss_slope_mb_per_100']:>+7.2f}MB")  # fmt: skip
    print("refresh: median of all refreshes (trial snapshot refresh + 30-min rollup, header reads, telemetry buckets + markers, "
          "chart built and serialized); trials/header/window/chart: its parts; cold: the first refresh of the process. "
          "RSS: after the first and the last refresh, max; slope: linear fit over the second half, MB per 100 refreshes.")
    checks = {
        "refresh_ms": r["total_median_ms"] <= TARGETS["refresh_ms"],
        "rss_mb": r["rss_max_mb"] <= TARGETS["rss_mb"],
        "no_trend": abs(r["rss_slope_mb_per_100"]) < 2.0,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in checks.items())
          + f" (refresh <= {TARGETS['refresh_ms']:g} ms, RSS <= {TARGETS['rss_mb']:g} MB, |slope| < 2 MB/100)"
          + (" [quick sizes]" if quick() else ""))
    where = write_result("bench_live_quick" if quick() else "bench_live", {"quick": quick(), "trials": n_trials,
                                                                            "telemetry_rows": n_telemetry, **r, "checks": checks})  # fmt: skip
    print(f"results: {where}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        raise SystemExit(main())
