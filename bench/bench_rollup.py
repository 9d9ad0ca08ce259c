"""Rollup benchmark: TrialSource vs a naive pandas load-all + groupby, at 1M and 10M trials.

Each measurement runs in its own process so peak RSS is its own. Trials arrive at 2 per second
(a busy harness), so 10M trials span ~58 days; "last 6 h" is the live view, "full range" is a
per-minute rollup of everything (~83k buckets at 10M, the worst case).

    .venv/bin/python -m bench rollup          # BENCH_QUICK=1: small sizes, a smoke run
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import cache_dir, median_ms, peak_rss_mb, quick, run_child, used, write_result

RATE_PER_S = 2.0
START = datetime(2025, 9, 1, tzinfo=UTC)
TARGETS = {"last6h_ms": 50.0, "full_ms": 1000.0, "rss_mb": 300.0, "speedup": 5.0}


def sizes() -> list[int]:
    return [20_000, 100_000] if quick() else [1_000_000, 10_000_000]


def dataset(n: int) -> Path:
    """Generate once (cached by size), reused by later runs."""
    from oasis_ops.trials.generate import generate_trials

    path = cache_dir() / f"trials_{n}.duckdb"
    if path.exists():
        return used(path)
    minutes = n / RATE_PER_S / 60.0
    end = START + timedelta(minutes=minutes)
    tmp = path.with_suffix(".tmp.duckdb")
    tmp.unlink(missing_ok=True)
    started = time.perf_counter()
    generate_trials(tmp, n_trials=n, start=START, minutes=minutes, seed=42,
                    failure_windows=[(end - timedelta(hours=3), end - timedelta(hours=3) + timedelta(minutes=6))])
    tmp.rename(path)
    print(f"  generated {n:,} trials in {time.perf_counter() - started:.1f} s -> {path}", flush=True)
    return path


# --- child processes ------------------------------------------------------------------------
def measure_ours(source_db: str) -> dict[str, Any]:
    import duckdb

    from oasis_ops.settings import load_settings
    from oasis_ops.trials import TrialSource

    runs = 3 if quick() else 7
    with tempfile.TemporaryDirectory(prefix="oasis-bench-") as tmp:
        db = Path(tmp) / "trials.duckdb"
        shutil.copyfile(source_db, db)  # we append to it
        settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(Path(tmp) / "snapshots")}).replace(snapshot_min_interval_s=0.0)
        opened = time.perf_counter()
        src = TrialSource(db, settings)
        open_ms = (time.perf_counter() - opened) * 1000.0
        first, last = src.time_bounds() or (START, START)
        end = last + timedelta(microseconds=1)
        six_h = end - timedelta(hours=6)
        cold_6h_ms = median_ms(lambda: src.rollup(six_h, end), 1)
        # median of uncached computations: a fresh cache each time
        def uncached(a: datetime, b: datetime, bucket: str = "1m") -> None:
            src._cache.clear()
            src.rollup(a, b, bucket)
        last6h_ms = median_ms(lambda: uncached(six_h, end), runs)
        full_ms = median_ms(lambda: uncached(first, end), max(3, runs // 2))
        full_auto_ms = median_ms(lambda: uncached(first, end, "1h"), max(3, runs // 2))
        summary_ms = median_ms(lambda: (src._summaries.clear(), src.summary(six_h, end)), runs)
        src.rollup(six_h, end)
        cached_6h_ms = median_ms(lambda: src.rollup(six_h, end), runs)

        # incremental refresh: a runner holding the file open appends 100 rows (WAL only)
        writer = duckdb.connect(str(db))
        refresh_times, copy_times = [], []
        next_id = 10**9
        for _ in range(runs):
            now = last + timedelta(seconds=30)
            rows = [(next_id + i, "run-1", "gemma4:e4b", (now + timedelta(milliseconds=10 * i)).replace(tzinfo=None),
                     None, 4100.0, "ok", None) for i in range(100)]
            rows[0] = (*rows[0][:3], (first + timedelta(minutes=30)).replace(tzinfo=None), *rows[0][4:])  # a late row
            next_id += 100
            writer.executemany("INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            last = now + timedelta(seconds=1)
            started = time.perf_counter()
            fresh = src.refresh()
            src.rollup(six_h, last + timedelta(microseconds=1))
            refresh_times.append((time.perf_counter() - started) * 1000.0)
            copy_times.append(fresh.copy_ms)
        assert src.cache_stats["bucket_recomputes"] > 0
        # the same after the runner closes (checkpoint: the main file changed, full copy)
        writer.close()
        started = time.perf_counter()
        fresh = src.refresh()
        src.rollup(six_h, last)
        refresh_full_copy_ms = (time.perf_counter() - started) * 1000.0
        src.close()
        size_mb = Path(source_db).stat().st_size / 1e6
    refresh_times.sort()
    return {
        "open_ms": open_ms,
        "cold_6h_ms": cold_6h_ms,
        "last6h_ms": last6h_ms,
        "cached_6h_ms": cached_6h_ms,
        "full_ms": full_ms,
        "full_1h_buckets_ms": full_auto_ms,
        "summary_6h_ms": summary_ms,
        "refresh_ms": refresh_times[len(refresh_times) // 2],
        "refresh_copy_ms": sorted(copy_times)[len(copy_times) // 2],
        "refresh_after_checkpoint_ms": refresh_full_copy_ms,
        "db_mb": size_mb,
        "rss_mb": peak_rss_mb(),
    }


def measure_pandas(source_db: str) -> dict[str, Any]:
    """The naive approach: load every trial into pandas, group by minute."""
    import duckdb
    import pandas as pd

    started = time.perf_counter()
    con = duckdb.connect(source_db, read_only=True)
    frame = con.execute("SELECT started_at, latency_ms, status FROM trials").df()
    con.close()
    loaded = time.perf_counter()
    frame["minute"] = frame["started_at"].dt.floor("min")
    frame["failed"] = frame["status"] != "ok"
    grouped = frame.groupby("minute")
    result = pd.DataFrame({
        "trials": grouped.size(),
        "failure_rate": grouped["failed"].mean(),
        "p50_ms": grouped["latency_ms"].quantile(0.5),
        "p95_ms": grouped["latency_ms"].quantile(0.95),
        "p99_ms": grouped["latency_ms"].quantile(0.99),
        "max_ms": grouped["latency_ms"].max(),
    })
    done = time.perf_counter()
    return {"load_ms": (loaded - started) * 1000, "total_ms": (done - started) * 1000, "buckets": len(result), "rss_mb": peak_rss_mb()}


# --- driver ---------------------------------------------------------------------------------
def main() -> int:
    rows = []
    for n in sizes():
        path = dataset(n)
        ours = run_child("bench.bench_rollup", "--measure", "ours", str(path))
        naive = run_child("bench.bench_rollup", "--measure", "pandas", str(path))
        rows.append({"trials": n, "ours": ours, "pandas": naive,
                     "speedup_full": naive["total_ms"] / ours["full_ms"],
                     "speedup_6h": naive["total_ms"] / ours["last6h_ms"]})
    header = (f"{'trials':>11} {'last 6h':>9} {'full 1m':>9} {'full 1h':>9} {'cached':>8} {'refresh':>9} "
              f"{'refresh*':>9} {'RSS':>8} | {'pandas':>9} {'RSS':>8} | {'x full':>7} {'x 6h':>7}")
    print(header)
    for r in rows:
        o, p = r["ours"], r["pandas"]
        print(f"{r['trials']:>11,} {o['last6h_ms']:>7.1f}ms {o['full_ms']:>7.0f}ms {o['full_1h_buckets_ms']:>7.0f}ms "
              f"{o['cached_6h_ms']:>6.1f}ms {o['refresh_ms']:>7.1f}ms {o['refresh_after_checkpoint_ms']:>7.0f}ms "
              f"{o['rss_mb']:>6.0f}MB | {p['total_ms']:>7.0f}ms {p['rss_mb']:>6.0f}MB | "
              f"{r['speedup_full']:>6.1f}x {r['speedup_6h']:>6.0f}x")
    print("last 6h / full 1m / full 1h: uncached median (1m and 1h buckets); cached: served from the rollup cache; refresh: 100 rows appended by a "
          "runner holding the file (WAL copy + exact recompute of touched buckets) incl. a last-6h rollup; "
          "refresh*: after the runner closed (checkpoint, full copy). RSS: peak of each measuring process.")
    biggest = rows[-1]
    checks = {
        "last6h_ms": biggest["ours"]["last6h_ms"] <= TARGETS["last6h_ms"],
        "full_ms": biggest["ours"]["full_ms"] <= TARGETS["full_ms"],
        "rss_mb": max(r["ours"]["rss_mb"] for r in rows) <= TARGETS["rss_mb"],
        "speedup": min(r["speedup_full"] for r in rows) >= TARGETS["speedup"],
    }
    print("targets at {:,} trials: ".format(biggest["trials"])
          + ", ".join(f"{k} {'met' if ok else 'MISSED'} (target {TARGETS[k]})" for k, ok in checks.items())
          + (" [quick sizes: targets are for 10M]" if quick() else ""))
    where = write_result("bench_rollup_quick" if quick() else "bench_rollup", {"quick": quick(), "rows": rows, "targets": TARGETS, "checks": checks})
    print(f"results: {where}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--measure":
        measure = measure_ours if sys.argv[2] == "ours" else measure_pandas
        print(json.dumps(measure(sys.argv[3])))
    else:
        raise SystemExit(main())
