"""`make soak`: the console beside a run for a compressed working day; does anything grow?

Starts `oasis-ops demo` (the demo world: the emulator on the real llama.cpp runner, the harness,
the sampler, the dashboard) with the sampler 10x faster than by default (a sample every 0.1 s:
one wall minute holds ten minutes of samples), opens the Live page in Debian's chromium with
auto-refresh on, and every LOOK_S seconds records the console's process tree (the launcher that
runs the sampler thread, and Streamlit): RSS, CPU seconds, threads, open files, and the sidecar's
size. At the end it fits a line through each series and prints the slope per wall hour and per
"sampled hour" (wall x 10), plus the first and last values. Bounded means: no slope that would
reach a problem within a day.

    make soak                       # SOAK_MIN=15 by default
    SOAK_MIN=48 make soak           # 48 wall minutes = 8 sampled hours
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SPEEDUP = 10.0  # sample_interval_s 0.1 instead of 1.0
LOOK_S = float(os.environ.get("SOAK_LOOK_S", "20"))
CHROMIUM = os.environ.get("OASIS_OPS_TEST_CHROMIUM", "/usr/bin/chromium")


def tree_figures(pid: int) -> dict[str, float]:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out = {"rss_mb": 0.0, "cpu_s": 0.0, "threads": 0.0, "open_files": 0.0}
    for proc in procs:
        try:
            name = " ".join(proc.cmdline()[:4])
            if "llama-server" in name or "oasis_ops.demo" in name or "ollama" in name.split("/")[-1]:
                continue  # the demo's runner, emulator and harness are the run, not the console
            with proc.oneshot():
                out["rss_mb"] += proc.memory_info().rss / 1e6
                times = proc.cpu_times()
                out["cpu_s"] += times.user + times.system
                out["threads"] += proc.num_threads()
                out["open_files"] += proc.num_fds()
        except psutil.Error:
            continue
    return out


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return float("nan")
    fit = statistics.linear_regression(xs, ys)
    return fit.slope * 3600.0


def main() -> int:
    minutes = float(os.environ.get("SOAK_MIN", "15"))
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="oasis-soak-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OASIS_OPS_")}
        env.update({"XDG_CACHE_HOME": str(work / "cache"), "OASIS_OPS_SNAPSHOT_DIR": str(work / "snap"),
                    "OASIS_OPS_SAMPLE_INTERVAL_S": str(1.0 / SPEEDUP), "OASIS_OPS_PROCESS_INTERVAL_S": "0.2",
                    "OASIS_OPS_LIVE_REFRESH_S": "2"})  # fmt: skip
        port = 8700 + os.getpid() % 200
        log = (work / "console.log").open("wb")
        argv = [sys.executable, "-m", "oasis_ops", "demo", "--dir", str(work / "demo"), "--port", str(port), "--keep-alive", "1m"]
        console = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        looks: list[dict[str, float]] = []
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while "Press Ctrl-C" not in (work / "console.log").read_text(errors="replace"):
                if console.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the demo did not start:\n{(work / 'console.log').read_text(errors='replace')[-2000:]}")
                time.sleep(1)
            sidecar = work / "demo" / "trials.ops.duckdb"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"], headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url + "/")
                page.get_by_text("Auto-refresh").first.click()  # the toggle: the page refreshes by itself all along
                started = time.monotonic()
                print(f"soak: {minutes:g} wall minutes = {minutes * SPEEDUP / 60:.1f} sampled hours; a look every {LOOK_S:g} s", flush=True)
                while time.monotonic() - started < minutes * 60:
                    figures = tree_figures(console.pid)
                    figures["t_s"] = time.monotonic() - started
                    figures["sidecar_mb"] = sidecar.stat().st_size / 1e6 if sidecar.exists() else 0.0
                    looks.append(figures)
                    time.sleep(LOOK_S)
                browser.close()
        finally:
            console.send_signal(signal.SIGTERM)
            try:
                console.wait(60)
            except subprocess.TimeoutExpired:
                console.kill()
            log.close()
        # the first two minutes are start-up (imports, the first snapshot, the model load)
        steady = [look for look in looks if look["t_s"] >= 120] or looks
        xs = [look["t_s"] for look in steady]
        rows = []
        for key, unit in (("rss_mb", "MB"), ("cpu_s", "CPU s"), ("threads", ""), ("open_files", ""), ("sidecar_mb", "MB")):
            ys = [look.get(key, 0.0) for look in steady]
            per_hour = slope_per_hour(xs, ys)
            rows.append({"what": key, "first": ys[0], "last": ys[-1], "per_wall_hour": per_hour,
                         "per_sampled_hour": per_hour / SPEEDUP, "unit": unit})  # fmt: skip
        print(f"{'series':<12} {'first':>10} {'last':>10} {'slope / wall h':>16} {'slope / sampled h':>18}")
        for row in rows:
            print(f"{row['what']:<12} {row['first']:>10.1f} {row['last']:>10.1f} {row['per_wall_hour']:>+16.2f} {row['per_sampled_hour']:>+18.3f}")
        cpu = next(r for r in rows if r["what"] == "cpu_s")
        print(f"console CPU: {cpu['per_wall_hour'] / 3600 * 100:.1f}% of one core (sampler at 10 Hz, Live page refreshing every 2 s)")
        out = ROOT / "bench" / "results" / "soak.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"minutes": minutes, "speedup": SPEEDUP, "rows": rows, "looks": looks}, indent=1))
        print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
