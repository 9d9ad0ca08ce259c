"""`oasis-ops report`: write the post-mortem of a run (Markdown with SVG charts beside it, or one
self-contained HTML file)."""

from __future__ import annotations

import argparse

from oasis_ops.commands import add_run_range_args, run_range
from oasis_ops.diagnosis.render import write_report
from oasis_ops.diagnosis.report import build_report
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the post-mortem report of a run (.md or .html)")
    add_run_range_args(p, to_help="end, exclusive")
    p.add_argument("--utc-offset", metavar="+HH:MM", help="also show local times at this offset (default: the log_utc_offset setting)")
    p.add_argument("--out", required=True, metavar="FILE.md|FILE.html", help="where to write the report")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings, start, end = run_range(args, log_utc_offset=args.utc_offset)
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
