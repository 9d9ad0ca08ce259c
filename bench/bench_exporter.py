"""Exporter scrape cost: `oasis-ops sample --prometheus` over the bench's trial table (10M trials
in a full run), whole-process (spawn until the first scrape that carries the trial counters, and
its RSS) and in-process (one uncached trial aggregate plus the sidecar read, warm), against a bare
DuckDB `count(*) GROUP BY status` on the same file in the same run (the least any per-status
counter could cost).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

RUNS = 3


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(db: Path) -> dict[str, float]:
    import duckdb
    import psutil
    from prometheus_client import CollectorRegistry, generate_latest

    from oasis_ops.exporter.collector import OasisCollector
    from oasis_ops.exporter.trialstats import TrialStats
    from oasis_ops.settings import load_settings

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="oasis-bench-exporter-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_")}
        env.update({"OASIS_OPS_SNAPSHOT_DIR": str(work / "snap"), "XDG_CACHE_HOME": str(work / "cache"),
                    "OASIS_OPS_OLLAMA_HOST": "http://127.0.0.1:9"})  # fmt: skip
        # baseline: the cheapest per-status count of the same file, in this process
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            con = duckdb.connect(str(db), read_only=True)
            con.execute("SELECT status, count(*) FROM trials GROUP BY status").fetchall()
            con.close()
            times.append(time.perf_counter() - started)
        out["bare_count_s"] = statistics.median(times)
        # in-process: a scrape with the trial aggregate not cached (min_interval 0), warm
        settings = load_settings().replace(snapshot_dir=str(work / "snap-in"))
        registry = CollectorRegistry(auto_describe=False)
        stats = TrialStats(db, settings, min_interval_s=0.0)
        registry.register(OasisCollector(work / "none.ops.duckdb", stats, host="bench"))
        generate_latest(registry)  # the snapshot and the first read
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            body = generate_latest(registry)
            times.append(time.perf_counter() - started)
        assert b"oasis_trials_total" in body
        out["scrape_uncached_s"] = statistics.median(times)
        stats.close()
        # whole process: the sampler with its exporter, from spawn to the first full scrape
        port = _port()
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "oasis_ops", "sample", "--db", str(db), "--sidecar", str(work / "s.ops.duckdb"),
                                 "--prometheus", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            while True:
                if time.perf_counter() - started > 600:
                    raise RuntimeError("the exporter gave no trial counters within 10 minutes")
                try:
                    text = httpx.get(url, timeout=120).text
                    if "oasis_trials_total{" in text:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            out["first_scrape_s"] = time.perf_counter() - started
            times = []
            for _ in range(RUNS):
                t0 = time.perf_counter()
                httpx.get(url, timeout=120).raise_for_status()
                times.append(time.perf_counter() - t0)
            out["scrape_cached_s"] = statistics.median(times)  # within min_interval_s: the trial counts are reused
            out["rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 1e6
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def rows(m: dict[str, float], n: int) -> list[dict[str, Any]]:
    """bench_cost's table rows."""
    return [
        {"what": f"exporter scrape, {n:,} trials (trial counters re-read)", "whole_s": m["first_scrape_s"], "rss_mb": m["rss_mb"],
         "inproc_s": m["scrape_uncached_s"],
         "vs": f"bare DuckDB count by status {m['bare_count_s'] * 1000:.0f} ms; a scrape within 10 s of the last "
               f"{m['scrape_cached_s'] * 1000:.1f} ms (cached); whole = spawn until the first scrape with the counters",
         "target": "", "met": None},
    ]  # fmt: skip


def main() -> int:
    from bench.bench_cost import trials_db
    from bench.common import write_result

    db = trials_db()
    m = measure(db)
    for key, value in m.items():
        print(f"  {key:<20} {value:.4g}")
    print(f"results: {write_result('bench_exporter', m)}")
    return 0
