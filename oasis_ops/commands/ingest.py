"""`oasis-ops ingest-logs`: ingest server.log / runner.log into the telemetry sidecar.

Incremental: a second run adds nothing; appended lines, rotated and truncated files are handled
(see oasis_ops.logs.ingest). Prints rows per kind and the junk / unrecognized lines skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from oasis_ops.commands import note_missing_trial_db, settings_from
from oasis_ops.commands.progress import ProgressBar, wanted
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text
from oasis_ops.logs.ingest import IngestReport, ingest_logs
from oasis_ops.sidecar import sidecar_path_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest-logs", help="ingest Ollama's server.log and the harness log into the sidecar")
    p.add_argument("--db", help="trial database; the sidecar is <stem>.ops.duckdb beside it")
    p.add_argument("--sidecar", help="telemetry sidecar path (default: from --db)")
    p.add_argument(
        "--server-log",
        action="append",
        default=[],
        metavar="FILE",
        help="Ollama server log; repeat for rotated files, oldest first (default: setting server_log)",
    )
    p.add_argument("--runner-log", metavar="FILE", help="the harness's runner.log")
    p.add_argument("--utc-offset", metavar="+HH:MM", help="offset of the naive local times (Gin, harness); default: this machine's")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr for files over 4 MB (auto: when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db, sidecar=args.sidecar, log_utc_offset=args.utc_offset)
    server_logs = list(args.server_log)
    if not server_logs and args.runner_log is None:
        configured = settings.server_log or ""
        default = Path("~/.ollama/logs/server.log").expanduser()
        if configured:
            server_logs = [configured]
        elif default.is_file():
            server_logs = [str(default)]
        else:
            raise UsageError("nothing to ingest: give --server-log FILE and/or --runner-log FILE")
    if not settings.sidecar and not settings.db:
        raise UsageError("give --db PATH (the trial database) or --sidecar PATH")
    sidecar = sidecar_path_for(settings.db or None, settings)
    note_missing_trial_db(settings, f"the log rows go to {sidecar}")
    bar = ProgressBar(sys.stderr) if wanted(args.progress, sys.stderr) else None
    try:
        report = ingest_logs(
            sidecar,
            server_logs=server_logs,
            runner_log=args.runner_log,
            utc_offset=settings.log_utc_offset,
            settings=settings,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json_text({"sidecar": str(sidecar), **report.as_dict()}, indent=2))
    else:
        print(format_report(report, str(sidecar)))
    return 0


def format_report(report: IngestReport, sidecar: str) -> str:
    lines = [f"sidecar {sidecar}"]
    for f in report.files:
        how = f.start if f.continued_from is None else f"continued from {f.continued_from}"
        lines.append(
            f"  {f.path} ({f.kind}): {how}, bytes {f.start_offset}..{f.end_offset}, {f.counts.lines} lines"
        )
        if f.kind == "server" or f.utc_offset_source:
            offset = f.utc_offset or "this machine's zone"
            lines.append(f"    naive local times read at {offset} ({f.utc_offset_source or 'default'})")
    total = report.counts
    rows: list[tuple[str, int]] = [("log_requests", total.requests), ("log_timings", total.timings)]
    rows += [(f"log_events.{kind}", n) for kind, n in sorted(total.events.items())]
    rows += [(f"harness_log.{kind}", n) for kind, n in sorted(total.harness.items())]
    rows += [("skipped junk lines", total.junk), ("skipped unrecognized lines", total.unrecognized)]
    width = max(len(name) for name, _ in rows)
    lines += [f"{name:<{width}}  {n:>10}" for name, n in rows]
    return "\n".join(lines)
