"""The one table of `make bench`: what the console costs, whole-process and in-process, against
baselines measured in the same run (issue 12).

Inputs (generated once into the bench cache, BENCH_CACHE_DIR, default /tmp/oasis-ops-bench):
10M trials at one per second (115.7 days; run-1 then run-2, the latest, of 1M), and a 200 MB
server.log (tests/helpers_logs.py). BENCH_QUICK=1: 1M trials and a 20 MB log, a smoke run.

Rows (each whole-process figure is the median of 5 runs of the command as a user types it, in
its own process, start-up included; peak RSS from wait4 for that process alone):
  timeline over 2000..2100     `oasis-ops timeline --from 2000-01-01 --to 2100-01-01` (100-year width)
  timeline, latest run         `oasis-ops timeline` (the default range)
  timeline --last 6h           the live view's range
  timeline --bucket 1m         every minute of the 115 days (166,667 buckets)
  baseline pandas              a naive script: load every trial, group by minute, percentiles
  live refresh                 one Live-page refresh, in-process (bench_live's measure)
  Live first paint             a fresh browser tab on the running dashboard until the chart is drawn
  dashboard RSS                the dashboard's process tree after the paints and refreshes
  ingest-logs 200 MB           `oasis-ops ingest-logs` into a new sidecar, vs a bare line read
  proxy overhead               `oasis-ops proxy` per request and per streamed token, vs direct calls
                               to the same upstream in the same run (bench/bench_proxy.py)
  exporter scrape              `oasis-ops sample --prometheus` over the same trials: spawn to the
                               first scrape with the counters, one uncached scrape, vs a bare
                               DuckDB count by status (bench/bench_exporter.py)

    .venv/bin/python -m bench            # this table (make bench)
    .venv/bin/python -m bench all        # every bench module
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import ROOT, cache_dir, quick, used, write_result

RUNS = 5
START = datetime(2025, 8, 1, tzinfo=UTC)
TARGETS = {
    "full_whole_x": 4.0,  # pandas whole-process / ours whole-process, at any width
    "full_inproc_x": 8.0,
    "last6h_share": 0.12,  # ours / pandas, whole-process
    "refresh_ms": 50.0,
    "first_paint_s": 2.0,
    "dashboard_mb": 300.0,
    "ingest_share": 1 / 6,  # our MB/s / a bare line read's MB/s (target 1/4)
    "ingest_rss_mb": 600.0,
}

PANDAS_BASELINE = r"""
import sys, time
t0 = time.perf_counter()
import duckdb, pandas as pd
t1 = time.perf_counter()
con = duckdb.connect(sys.argv[1], read_only=True)
frame = con.execute("SELECT started_at, latency_ms, status FROM trials").df()
con.close()
frame["minute"] = frame["started_at"].dt.floor("min")
frame["failed"] = frame["status"] != "ok"
g = frame.groupby("minute")
out = pd.DataFrame({"trials": g.size(), "failure_rate": g["failed"].mean(), "p50_ms": g["latency_ms"].quantile(0.5),
                    "p95_ms": g["latency_ms"].quantile(0.95), "p99_ms": g["latency_ms"].quantile(0.99),
                    "max_ms": g["latency_ms"].max()})
out.to_csv(sys.stdout)
sys.stderr.write(f"INPROC {time.perf_counter() - t1}\n")
"""

BARE_READ = r"""
import sys, time
t0 = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        n += 1
sys.stderr.write(f"INPROC {time.perf_counter() - t0}\n")
"""


# --- inputs -------------------------------------------------------------------------------------
def n_trials() -> int:
    return 1_000_000 if quick() else 10_000_000


def trials_db() -> Path:
    """n trials at 1/s: run-1 (90%) then run-2 (the latest, with a 6-minute failure window)."""
    n = n_trials()
    path = cache_dir() / f"cost_trials_{n}.duckdb"
    if path.exists():
        return used(path)
    from oasis_ops.trials.generate import generate_trials

    tmp = path.with_suffix(".tmp.duckdb")
    tmp.unlink(missing_ok=True)
    first = n * 9 // 10
    generate_trials(tmp, n_trials=first, start=START, minutes=first / 60, seed=42, run_id="run-1")
    second_start = START + timedelta(minutes=first / 60)
    end = second_start + timedelta(minutes=(n - first) / 60)
    failure = end - timedelta(hours=3)
    generate_trials(tmp, n_trials=n - first, start=second_start, minutes=(n - first) / 60, seed=43, run_id="run-2",
                    failure_windows=[(failure, failure + timedelta(minutes=6))])  # fmt: skip
    tmp.rename(path)
    return path


def server_log() -> Path:
    size = (20 if quick() else 200) << 20
    path = cache_dir() / f"server_{size >> 20}mb.log"
    if path.exists() and abs(path.stat().st_size - size) < (1 << 20):
        return used(path)
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers_logs import write_server_log

    tmp = path.with_suffix(".tmp")
    write_server_log(tmp, size)
    os.replace(tmp, path)
    return path


# --- measuring a whole process ------------------------------------------------------------------
LAUNCHER = r"""
import json, os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read().decode(errors="replace")
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"s": time.perf_counter() - started, "rc": os.waitstatus_to_exitcode(status),
                  "rss_mb": usage.ru_maxrss / 1024, "err": err[-1500:]}))
"""


def whole(argv: list[str], env: dict[str, str], runs: int = RUNS) -> dict[str, float]:
    """Median wall seconds over `runs` runs of argv, its own peak RSS (MB), and the median of
    what it reported as INPROC on stderr (seconds), if anything.

    Each run is started by a small launcher process: Linux carries a parent's peak RSS into a
    forked child's ru_maxrss, so forking from this (large) process would report our own peak."""
    walls, rss, inproc = [], [], []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=1800, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"launcher failed: {done.stderr[-1500:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["rc"] != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result['rc']}: {result['err']}")
        walls.append(result["s"])
        rss.append(result["rss_mb"])
        for line in result["err"].splitlines():
            if line.startswith("INPROC "):
                inproc.append(float(line.split()[1]))
    return {
        "s": statistics.median(walls),
        "rss_mb": max(rss),
        "inproc_s": statistics.median(inproc) if inproc else float("nan"),
    }


def oasis(*args: str) -> list[str]:
    return [sys.executable, "-m", "oasis_ops", *args]


# --- in-process figures (a child each: its own imports, its own memory) --------------------------
def inproc_rollup(db: str, start: str, end: str, snapshots: str) -> dict[str, float]:
    import pandas  # noqa: F401 - warm, as the baseline's in-process figure: the rollup imports it lazily

    from oasis_ops.settings import load_settings
    from oasis_ops.trials import TrialSource
    from oasis_ops.trials.timeparse import auto_bucket, parse_time

    settings = load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": snapshots})
    a, b = parse_time(start), parse_time(end)
    started = time.perf_counter()
    with TrialSource(db, settings) as src:
        opened = time.perf_counter()
        frame = src.rollup(a, b, auto_bucket(a, b))
        done = time.perf_counter()
    return {"open_s": opened - started, "rollup_s": done - opened, "total_s": done - started, "rows": len(frame)}


def inproc_ingest(log: str) -> dict[str, float]:
    from oasis_ops.logs.ingest import ingest_logs

    with tempfile.TemporaryDirectory(prefix="oasis-bench-ingest-") as tmp:
        started = time.perf_counter()
        report = ingest_logs(Path(tmp) / "s.ops.duckdb", server_logs=[log], utc_offset="+01:00")
        return {"s": time.perf_counter() - started, "lines": report.counts.lines}


def inproc_warnings(db: str) -> dict[str, float]:
    """The causal scan over the replayed day in a warm interpreter, and one live evaluation (what
    the sampler does every 30 s: two sidecar reads, the trial minutes, every rule once)."""
    import statistics as stats
    from datetime import timedelta as td

    from oasis_ops.diagnosis.windows import default_range
    from oasis_ops.earlywarning.engine import scan_warnings
    from oasis_ops.earlywarning.inputs import load_inputs
    from oasis_ops.earlywarning.live import LiveWarnings
    from oasis_ops.settings import load_settings
    from oasis_ops.sidecar import Sidecar, sidecar_path_for
    from oasis_ops.trials import TrialSource

    settings = load_settings(env={}).replace(db=db)
    with TrialSource(Path(db), settings) as source:
        found = default_range(source, None, None)
        assert found is not None
        start, end, run_id = found
        end = end + td(minutes=30)
        sidecar = Sidecar(sidecar_path_for(db, settings), settings)
        started = time.perf_counter()
        warnings, _ = scan_warnings(load_inputs(sidecar, source, start, end, run_id=run_id), start, end, settings)
        scan_s = time.perf_counter() - started
        live = LiveWarnings(sidecar, settings, trials=lambda: source)
        each = []
        for i in range(20):  # the afternoon, every 30 s from 17:30
            at = start.replace(hour=17, minute=30) + td(seconds=30 * i)
            t0 = time.perf_counter()
            live.tick(at, 30.0 * i)
            each.append(time.perf_counter() - t0)
    return {"s": scan_s, "moments": (end - start).total_seconds() / 30, "warnings": len(warnings), "live_ms": stats.median(each) * 1000}


def child(name: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_cost", "--child", name, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the browser --------------------------------------------------------------------------------
def browser_figures(db: Path, work: Path) -> dict[str, float]:
    """First paint of the Live page (a fresh tab, the server already warm) and the dashboard's
    RSS after the paints, through Debian's chromium."""
    import psutil
    from playwright.sync_api import sync_playwright

    from oasis_ops.server import free_port, health_ok

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_")}
    env.update({"XDG_CACHE_HOME": str(work / "cache"), "OASIS_OPS_SNAPSHOT_DIR": str(work / "snap"), "OASIS_OPS_SAMPLER": "false",
                "OASIS_OPS_LIVE_REFRESH_S": "0"})  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(oasis("dashboard", "--db", str(db), "--port", str(port), "--log", str(work / "streamlit.log")),
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    out: dict[str, float] = {}
    try:
        while not health_ok(url + "/_stcore/health"):
            if server.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.1)
        out["server_start_s"] = time.perf_counter() - started
        paints = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
            for _ in range(4):  # the first is the server's first script run (cold caches)
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                t0 = time.perf_counter()
                page.goto(url + "/")
                page.locator("[data-testid=stVegaLiteChart] svg, [data-testid=stVegaLiteChart] canvas").first.wait_for(
                    state="visible", timeout=120_000
                )
                paints.append(time.perf_counter() - t0)
                context.close()
            browser.close()
        out["first_paint_cold_s"] = paints[0]
        out["first_paint_s"] = statistics.median(paints[1:])
        tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        out["dashboard_rss_mb"] = sum(p.memory_info().rss for p in tree) / 1e6
        out["dashboard_peak_mb"] = max(_hwm_mb(p.pid) for p in tree)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return out


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- the table ----------------------------------------------------------------------------------
def main() -> int:
    db = trials_db()
    log = server_log()
    n = n_trials()
    first = START
    last = START + timedelta(seconds=n)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="oasis-bench-cost-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_")}
        env.update({"OASIS_OPS_SNAPSHOT_DIR": str(work / "snap"), "XDG_CACHE_HOME": str(work / "cache")})
        print(f"  {n:,} trials ({db.stat().st_size / 1e6:.0f} MB), {log.stat().st_size / 1e6:.0f} MB server.log; {RUNS} runs each",
              flush=True)  # fmt: skip
        whole(oasis("timeline", "--db", str(db), "--last", "1h"), env, runs=1)  # the snapshot dir and groups exist
        pandas = whole([sys.executable, "-c", PANDAS_BASELINE, str(db)], env)
        century = whole(oasis("timeline", "--db", str(db), "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv"), env)
        century_in = child("rollup", str(db), "2000-01-01", "2100-01-01", str(work / "snap"))
        latest = whole(oasis("timeline", "--db", str(db), "--format", "csv"), env)
        six = whole(oasis("timeline", "--db", str(db), "--last", "6h", "--format", "csv"), env)
        minutes = whole(oasis("timeline", "--db", str(db), "--from", first.isoformat(), "--to", last.isoformat(), "--bucket", "1m",
                              "--format", "csv"), env)  # fmt: skip
        rows += [
            _row("timeline 2000..2100 (100-year width)", century, century_in["total_s"], pandas,
                 f">= {TARGETS['full_whole_x']:g}x pandas whole, >= {TARGETS['full_inproc_x']:g}x in-process",
                 pandas["s"] / century["s"] >= TARGETS["full_whole_x"]
                 and pandas["inproc_s"] / century_in["total_s"] >= TARGETS["full_inproc_x"]),  # fmt: skip
            _row("timeline, latest run (default)", latest, None, pandas, "", None),
            _row("timeline --last 6h", six, None, pandas, f"<= {TARGETS['last6h_share']:.0%} of pandas whole",
                 six["s"] / pandas["s"] <= TARGETS["last6h_share"]),  # fmt: skip
            _row(f"timeline --bucket 1m, {(last - first).days} days", minutes, None, pandas, "", None),
            {"what": "baseline: pandas load + groupby (1m)", "whole_s": pandas["s"], "rss_mb": pandas["rss_mb"],
             "inproc_s": pandas["inproc_s"], "vs": "", "target": "", "met": None},  # fmt: skip
        ]
        live = _live(db, work)
        fragment = max(live["header_median_ms"], live["charts_fragment_median_ms"])
        rows.append({"what": "live refresh: the slower fragment (in-process, median)", "whole_s": None, "rss_mb": live["rss_max_mb"],
                     "inproc_s": fragment / 1000,
                     "vs": f"header {live['header_median_ms']:.0f} ms /5 s, charts {live['charts_fragment_median_ms']:.0f} ms /10 s; "
                           f"whole page {live['total_median_ms']:.0f} ms",
                     "target": f"<= {TARGETS['refresh_ms']:g} ms", "met": fragment <= TARGETS["refresh_ms"]})  # fmt: skip
        paint = browser_figures(db, work / "browser")
        rows.append({"what": "Live first paint (chromium, warm server)", "whole_s": paint["first_paint_s"], "rss_mb": None,
                     "inproc_s": None, "vs": f"cold {paint['first_paint_cold_s']:.1f} s; server up {paint['server_start_s']:.1f} s",
                     "target": f"<= {TARGETS['first_paint_s']:g} s", "met": paint["first_paint_s"] <= TARGETS["first_paint_s"]})  # fmt: skip
        rows.append({"what": "dashboard process tree after 4 paints", "whole_s": None, "rss_mb": paint["dashboard_rss_mb"],
                     "inproc_s": None, "vs": f"peak {paint['dashboard_peak_mb']:.0f} MB (one process)",
                     "target": f"<= {TARGETS['dashboard_mb']:g} MB", "met": paint["dashboard_rss_mb"] <= TARGETS["dashboard_mb"]})  # fmt: skip
        size_mb = log.stat().st_size / 1e6
        bare = whole([sys.executable, "-c", BARE_READ, str(log)], env)
        ingest_runs = []
        for i in range(RUNS):
            ingest_runs.append(whole(oasis("ingest-logs", "--sidecar", str(work / f"i{i}.ops.duckdb"), "--server-log", str(log),
                                           "--utc-offset", "+01:00", "--progress", "never"), env, runs=1))  # fmt: skip
        ingest = {"s": statistics.median(r["s"] for r in ingest_runs), "rss_mb": max(r["rss_mb"] for r in ingest_runs)}
        ingest_in = child("ingest", str(log))
        share = bare["s"] / ingest["s"]
        rows.append({"what": f"ingest-logs {size_mb:.0f} MB ({size_mb / ingest['s']:.0f} MB/s whole, "
                             f"{size_mb / ingest_in['s']:.0f} MB/s in-process)",
                     "whole_s": ingest["s"], "rss_mb": ingest["rss_mb"], "inproc_s": ingest_in["s"],
                     "vs": f"1/{1 / share:.1f} of a bare line read ({size_mb / bare['s']:.0f} MB/s, {bare['s']:.2f} s whole); "
                           f"in-process 1/{ingest_in['s'] / bare['inproc_s']:.1f}",
                     "target": f">= 1/{1 / TARGETS['ingest_share']:.0f} of a bare read, <= {TARGETS['ingest_rss_mb']:g} MB",
                     "met": share >= TARGETS["ingest_share"] and ingest["rss_mb"] <= TARGETS["ingest_rss_mb"]})  # fmt: skip
        from oasis_ops.demo import replay

        replay.write_replay(work / "replay", ingest=False)
        replay_db = str(work / "replay" / replay.TRIALS_FILE)
        warned = whole(oasis("warnings", "--db", replay_db, "--json"), env)
        incidents = whole(oasis("incidents", "--db", replay_db, "--json"), env)
        warned_in = child("warnings", replay_db)
        rows.append({"what": f"warnings over the replayed day ({warned_in['moments']:,.0f} moments)", "whole_s": warned["s"],
                     "rss_mb": warned["rss_mb"], "inproc_s": warned_in["s"],
                     "vs": f"incidents on the same run {incidents['s']:.2f} s whole; one live evaluation {warned_in['live_ms']:.0f} ms "
                           "(every 30 s)",
                     "target": "", "met": None})  # fmt: skip
    from bench import bench_exporter, bench_proxy

    rows += bench_proxy.rows(bench_proxy.measure())
    rows += bench_exporter.rows(bench_exporter.measure(db), n)
    print_table(rows)
    where = write_result("bench_cost_quick" if quick() else "bench_cost",
                         {"quick": quick(), "trials": n, "log_mb": log.stat().st_size / 1e6, "rows": rows, "targets": TARGETS})  # fmt: skip
    print(f"results: {where}" + ("  [quick sizes: the targets are for 10M trials and 200 MB]" if quick() else ""))
    return 0


def _row(what: str, ours: dict[str, float], inproc: float | None, pandas: dict[str, float], target: str, met: bool | None) -> dict[str, Any]:
    ratio = pandas["s"] / ours["s"]
    vs = f"{ratio:.1f}x faster than pandas whole" if ratio >= 1 else f"{1 / ratio:.1f}x slower than pandas"
    if inproc is not None:
        vs += f", {pandas['inproc_s'] / inproc:.1f}x in-process"
    if "last 6h" in what:
        vs = f"{ours['s'] / pandas['s']:.1%} of pandas whole"
    return {"what": what, "whole_s": ours["s"], "rss_mb": ours["rss_mb"], "inproc_s": inproc, "vs": vs, "target": target, "met": met}


def _live(db: Path, work: Path) -> dict[str, Any]:
    import shutil

    from bench.bench_live import telemetry_sidecar
    from oasis_ops.settings import load_settings
    from oasis_ops.trials import TrialSource

    copy = work / "live" / "trials.duckdb"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, copy)
    with TrialSource(copy, load_settings(env={"OASIS_OPS_SNAPSHOT_DIR": str(work / "live" / "s")})) as src:
        bounds = src.time_bounds()
    assert bounds is not None
    sidecar = telemetry_sidecar(100_000 if quick() else 1_000_000, bounds[1].replace(microsecond=0))
    proc = subprocess.run([sys.executable, "-m", "bench.bench_live", "--measure", str(copy), str(sidecar), "100"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"live refresh measure failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _fmt_s(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.1f} us"
    if value < 0.01:
        return f"{value * 1000:.2f} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'measurement':<58} {'whole':>9} {'in-proc':>9} {'peak RSS':>9}  {'against the baseline':<58} target")
    for r in rows:
        rss = "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f} MB"
        mark = "" if r["met"] is None else (" met" if r["met"] else " MISSED")
        print(f"{r['what']:<58} {_fmt_s(r['whole_s']):>9} {_fmt_s(r['inproc_s']):>9} {rss:>9}  {r['vs']:<58} {r['target']}{mark}")
    print("whole: median wall time of the command as typed (interpreter start-up, imports, snapshot copy included); "
          "in-process: the work alone in a warm interpreter; peak RSS: that process's own (wait4).")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        name, args = sys.argv[2], sys.argv[3:]
        result = {"rollup": inproc_rollup, "ingest": inproc_ingest, "warnings": inproc_warnings}[name](*args)
        print(json.dumps(result))
    else:
        raise SystemExit(main())
