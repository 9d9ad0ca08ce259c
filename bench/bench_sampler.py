"""Sampler benchmark: cost per tick and CPU share of one core at 1 Hz, against the emulator.

The Ollama emulator runs as its own process with one model loaded (its runner is a real child
process, so the sampler's process scan and /api/ps poll do real work) and a trickle of requests
(so its server.log grows and is tailed). The sampler runs as the dashboard launcher runs it: a
thread in this process. CPU share = this process's CPU time over wall time while the main
thread only sleeps. Variants show what batching buys.

    .venv/bin/python -m bench sampler          # BENCH_QUICK=1: 8 s per variant instead of 30 s
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import quick, write_result

TARGET_CPU_PERCENT = 1.0
MODEL = "gemma4:e4b"


def duration_s() -> float:
    return 8.0 if quick() else 30.0


def _trickle(url: str, stop: threading.Event) -> None:
    """One small generation every 2 s (a slow harness): the server.log keeps growing."""
    with httpx.Client(timeout=30, trust_env=False) as client:
        while not stop.wait(2.0):
            try:
                client.post(url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False, "keep_alive": -1})
            except httpx.HTTPError:
                pass


def measure(name: str, url: str, models_dir: Path, server_log: Path, work: Path, **kwargs: Any) -> dict[str, Any]:
    from oasis_ops.sampler import Sampler
    from oasis_ops.settings import load_settings
    from oasis_ops.sidecar import Sidecar

    settings = load_settings(env={}).replace(ollama_host=url, ollama_models=str(models_dir), server_log=str(server_log))
    sidecar = work / f"{name}.ops.duckdb"
    sampler = Sampler(sidecar, settings, **kwargs)
    sampler.open()
    proc = psutil.Process()
    sampler.tick()  # warm-up (imports, first process scan, blob lookup) not counted
    sampler.tick_ms.clear()
    cpu0 = sum(proc.cpu_times()[:2])
    wall0 = time.perf_counter()
    stop = threading.Event()
    thread = threading.Thread(target=sampler.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(duration_s())
    stop.set()
    thread.join(10)
    wall = time.perf_counter() - wall0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    ticks = sorted(sampler.tick_ms)
    stats = sampler.stats()
    sampler.close()
    rows = Sidecar(sidecar).table_stats().set_index("table")["row_count"].to_dict()
    return {
        "variant": name,
        "ticks": len(ticks),
        "tick_median_ms": statistics.median(ticks),
        "tick_p95_ms": ticks[int(0.95 * (len(ticks) - 1))],
        "tick_max_ms": ticks[-1],
        "cpu_percent_of_one_core": cpu / wall * 100.0,
        "errors": stats["errors"],
        "rows": {k: int(v) for k, v in rows.items() if v},
    }


def main() -> int:
    from oasis_ops.demo.ollama.process import EmulatorProcess
    from oasis_ops.sampler import FLUSH_INTERVAL_S, LOG_INTERVAL_S

    results = []
    with tempfile.TemporaryDirectory(prefix="oasis-bench-sampler-") as tmp:
        work = Path(tmp)
        emu = EmulatorProcess(work / "ollama", latency_ms=50, load_ms=0)
        emu.start()
        stop = threading.Event()
        try:
            httpx.post(emu.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False, "keep_alive": -1},
                       timeout=30).raise_for_status()  # fmt: skip
            trickle = threading.Thread(target=_trickle, args=(emu.url, stop), daemon=True)
            trickle.start()
            from oasis_ops.probes import PsutilProcesses

            variants = [
                ("default", {}),
                ("full_process_scans", {"processes": PsutilProcesses(with_environ=False)}),
                ("flush_every_tick", {"flush_interval_s": 0.0, "log_interval_s": 0.0}),
            ]
            for name, kwargs in variants:
                print(f"  {name}: sampling at 1 Hz for {duration_s():.0f} s ...", flush=True)
                results.append(measure(name, emu.url, emu.home.models_dir, emu.server_log, work, **kwargs))
        finally:
            stop.set()
            emu.stop()
    print(f"{'variant':<18} {'ticks':>6} {'median':>9} {'p95':>9} {'max':>9} {'CPU/core':>9} {'errors':>7}  rows written")
    for r in results:
        print(f"{r['variant']:<18} {r['ticks']:>6} {r['tick_median_ms']:>7.2f}ms {r['tick_p95_ms']:>7.2f}ms {r['tick_max_ms']:>7.1f}ms "
              f"{r['cpu_percent_of_one_core']:>8.2f}% {r['errors']:>7}  {r['rows']}")
    print(f"default: host + /api/ps every 1 s, processes every 2 s, one sidecar write every {FLUSH_INTERVAL_S:g} s "
          f"(or at once after an event), server.log tailed every {LOG_INTERVAL_S:g} s; full_process_scans: every 2 s a full "
          "psutil scan of all processes instead of re-measuring the known Ollama processes (full scan every 30 s); flush_every_tick: a sidecar write "
          "and a log poll on every tick. Tick times are wall time inside the tick (a flush tick includes the DuckDB write).")
    default = results[0]
    ok = default["cpu_percent_of_one_core"] <= TARGET_CPU_PERCENT
    print(f"target: CPU share at 1 Hz <= {TARGET_CPU_PERCENT:g}% of one core: {'met' if ok else 'MISSED'} "
          f"({default['cpu_percent_of_one_core']:.2f}%)" + (" [quick run]" if quick() else ""))
    where = write_result("bench_sampler_quick" if quick() else "bench_sampler", {"quick": quick(), "results": results,
                                                                                  "target_cpu_percent": TARGET_CPU_PERCENT})  # fmt: skip
    print(f"results: {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
