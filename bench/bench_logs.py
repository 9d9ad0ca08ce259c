"""Log ingestion benchmark: a realistic 100 MB server.log into a fresh sidecar.

Generates the log once (server_100mb.log in the bench cache, reused while its size matches), then
measures, each in a fresh subprocess so peak RSS belongs to that step alone:
  baseline  `for line in f: pass` over the file (the floor: reading lines in Python)
  naive     one regex tried per shape on every line, values converted, nothing stored
  parse     our parsers alone (no database)
  ingest    the full `ingest_logs` into a new sidecar (parse + Arrow + DuckDB, offsets)
and prints seconds, MB/s, peak RSS and the ratio to the baseline. `python -m bench` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import cache_dir, used

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_BYTES = 100 * 1024 * 1024

_CHILD = r"""
import json, re, resource, sys, time
from datetime import datetime
step, log, sidecar = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
info = {}
if step == "baseline":
    n = 0
    with open(log, "rb") as f:
        for line in f:
            n += 1
    info["lines"] = n
elif step == "naive":
    shapes = [
        re.compile(r"\[GIN\] (\d{4})/(\d\d)/(\d\d) - (\d\d):(\d\d):(\d\d) \|\s*(\d+)\s*\|\s*([\d.]+)(\w+)\s*\|\s*(\S+)\s*\|\s*(\w+)\s+\"(.*)\""),
        re.compile(r"time=(\S+) level=(\w+) source=(\S+) msg=(\"(?:[^\"\\]|\\.)*\"|\S+)(.*)"),
        re.compile(r"slot print_timing: id\s+\d+ \| task (\d+) \|\s*(.*?) time =\s*([\d.]+) ms"),
        re.compile(r"image (?:slice encoded|decoded \(batch \d+/\d+\)) in ([\d.]+) ms"),
    ]
    n = 0
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            for shape in shapes:
                m = shape.match(line)
                if m:
                    g = m.groups()
                    if g[0] and len(g) > 6:
                        datetime(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]))
                        float(g[7])
                    n += 1
                    break
    info["matched"] = n
elif step == "parse":
    from oasis_ops.logs.ingest import FileCursor, read_chunks
    from oasis_ops.logs.parse import LocalClock, ServerLogParser
    cursor = FileCursor(log, "server", ServerLogParser(LocalClock("+01:00")))
    with open(log, "rb") as f:
        for _ in read_chunks(cursor, f):
            cursor.parser.rows.take()
    cursor.parser.finish()
    info["lines"] = cursor.parser.counts.lines
else:
    from oasis_ops.logs.ingest import ingest_logs
    report = ingest_logs(sidecar, server_logs=[log], utc_offset="+01:00")
    c = report.counts
    info.update(lines=c.lines, requests=c.requests, timings=c.timings, events=sum(c.events.values()), junk=c.junk)
info["seconds"] = time.perf_counter() - t0
info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(info))
"""


def ensure_log(path: Path) -> Path:
    """The 100 MB log, generated once (deterministic seed) and reused."""
    if path.exists() and abs(path.stat().st_size - TARGET_BYTES) < 1024 * 1024:
        return used(path)
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers_logs import write_server_log

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write_server_log(tmp, TARGET_BYTES)
    os.replace(tmp, path)
    return path


def run_step(step: str, log: Path, sidecar: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, step, str(log), str(sidecar)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bench step {step} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    log = ensure_log(cache_dir() / "server_100mb.log")
    size_mb = log.stat().st_size / (1024 * 1024)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_logs_") as tmp:
        for step in ("baseline", "naive", "parse", "ingest"):
            results[step] = run_step(step, log, Path(tmp) / f"{step}.ops.duckdb")
    base = results["baseline"]["seconds"]
    print(f"\nlog ingestion: {log.name}, {size_mb:.1f} MB, {int(results['baseline']['lines']):,} lines")
    print(f"{'step':<10} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12} {'x baseline':>11}")
    for step, r in results.items():
        print(f"{step:<10} {r['seconds']:>8.2f} {size_mb / r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {r['seconds'] / base:>11.1f}")
    i = results["ingest"]
    print(
        f"ingest stored {int(i['requests']):,} requests, {int(i['timings']):,} timings, "
        f"{int(i['events']):,} events; junk {int(i['junk'])}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
