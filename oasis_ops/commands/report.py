"""`oasis-ops report`: write the post-mortem of a run (Markdown with SVG charts beside it, or one
self-contained HTML file)."""

from __future__ import annotations

import argparse

from oasis_ops.commands import settings_from
from oasis_ops.diagnosis.render import write_report
from oasis_ops.diagnosis.report import build_report
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text
from oasis_ops.trials import parse_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the post-mortem report of a run (.md or .html)")
    p.add_argument("--db", help="trial database (DuckDB); default: the db setting")
    p.add_argument("--sidecar", help="telemetry sidecar (default: <db stem>.ops.duckdb beside it)")
    p.add_argument("--from", dest="start", metavar="T", help="start (ISO 8601, naive = UTC); default: the latest run")
    p.add_argument("--to", dest="end", metavar="T", help="end, exclusive")
    p.add_argument("--run-id", help="only this run (default: the latest)")
    p.add_argument("--model", help="only this model")
    p.add_argument("--utc-offset", metavar="+HH:MM", help="also show local times at this offset (default: the log_utc_offset setting)")
    p.add_argument("--out", required=True, metavar="FILE.md|FILE.html", help="where to write the report")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db, sidecar=args.sidecar, log_utc_offset=args.utc_offset)
    if not settings.db:
        raise UsageError("no trial database: pass --db PATH or set the db setting")
    if bool(args.start) != bool(args.end):
        raise UsageError("give both --from and --to, or neither (the latest run)")
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    if start and end and end <= start:
        raise UsageError("--to must be after --from")
    if not str(args.out).lower().endswith((".md", ".markdown", ".html", ".htm")):
        raise UsageError(f"--out must end in .md or .html, got {args.out!r}")
    report = build_report(settings.db, settings, start=start, end=end, run_id=args.run_id, model=args.model)
    written = write_report(report, args.out)
    if args.json:
        print(json_text(written.as_dict(), indent=1))
    else:
        extra = f" and {len(written.charts)} chart(s) beside it" if written.charts else ""
        print(f"wrote {written.path}{extra}: {report.title}")
    return 0
