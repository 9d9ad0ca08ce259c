"""`oasis-ops sample --db PATH [--interval S] [--once]`: the telemetry sampler, headless.

Runs until Ctrl-C or SIGTERM, writing host memory, /api/ps and runner samples (and events) to
the trial DB's sidecar. A second sampler on the same sidecar exits 1 with a one-line message.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from oasis_ops.commands import note_missing_trial_db, number_in, settings_from
from oasis_ops.errors import UsageError
from oasis_ops.exporter import start_exporter
from oasis_ops.sampler import Sampler
from oasis_ops.sidecar import sidecar_path_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="run the telemetry sampler without the dashboard")
    p.add_argument("--db", help="trial database whose sidecar gets the telemetry (default: the `db` setting)")
    p.add_argument("--sidecar", help="write this sidecar instead of <db stem>.ops.duckdb")
    p.add_argument("--interval", type=number_in(float, 0.01, 3600), help="seconds between samples (default: sample_interval_s, 1)")
    p.add_argument("--once", action="store_true", help="take one sample (creating the sidecar if needed) and exit")
    p.add_argument("--prometheus", metavar="HOST:PORT",
                   help="also serve Prometheus metrics there (default: the prometheus_listen setting; empty: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db, sidecar=args.sidecar, sample_interval_s=args.interval,
                             prometheus_listen=args.prometheus)  # fmt: skip
    if not settings.db and not settings.sidecar:
        raise UsageError("no trial database: pass --db path/to/trials.duckdb (its sidecar gets the telemetry)")
    if args.interval is not None and args.interval <= 0:
        raise UsageError(f"--interval must be positive, got {args.interval:g}")
    path = sidecar_path_for(settings.db or None, settings)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if settings.db and not Path(str(settings.db)).expanduser().parent.is_dir():
        note_missing_trial_db(settings, "")  # raises: a typo in --db must not create directories
    exporter = start_exporter(settings, path) if settings.prometheus_listen and not args.once else None
    sampler = Sampler(path, settings)
    try:
        sampler.open()  # SidecarBusy: "another sampler (pid N, started ...) is already writing ..."
    except BaseException:
        if exporter is not None:
            exporter.stop()
        raise
    note_missing_trial_db(settings, f"telemetry goes to {path}")
    if exporter is not None:
        print(f"Prometheus metrics at {exporter.url}", flush=True)
    try:
        if args.once:
            report = sampler.tick()
            models = ", ".join(f"{m.model} {m.state}" for m in report.models) or "no model loaded"
            ollama = "reachable" if report.ollama_reachable else "NOT reachable" if report.ollama_reachable is False else "unknown"
            host = report.host.source if report.host else "unavailable"
            print(f"sampled once into {path}: host memory from {host}; Ollama {ollama}; {models}")
            for error in report.errors:
                print(f"  error: {error}", file=sys.stderr)
            return 0
        stop = threading.Event()

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        print(f"sampling every {sampler.interval_s:g} s into {path} (Ctrl-C to stop)", flush=True)
        sampler.run(stop)
        return 0
    finally:
        sampler.close()
        if exporter is not None:
            exporter.stop()
        stats = sampler.stats()
        if not args.once:
            print(f"sampler stopped: {stats['ticks']} ticks, {stats['errors']} errors", flush=True)
