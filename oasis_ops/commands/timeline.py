"""`oasis-ops timeline`: per-bucket trials, failure rate and latency percentiles, from the CLI.

A thin layer over oasis_ops.trials.TrialSource: the range defaults to the latest run (or the
whole table when there is no run_id column); `--last` counts back from `--to`, else from the
newest trial, so it also works on a finished run. The table's header names the run by its span
(TrialSource.run_span: the same start, end and duration as every other surface); JSON and CSV
give latencies to 0.01 ms.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from oasis_ops.commands import settings_from
from oasis_ops.errors import DataError, UsageError
from oasis_ops.fmt import json_text
from oasis_ops.trials import TrialSource, auto_bucket, bucket_seconds, parse_duration, parse_time
from oasis_ops.trials.records import OUTPUT_COLUMNS, records_csv
from oasis_ops.trials.span import RunSpan
from oasis_ops.trials.timeparse import ceil_to_bucket

FIELDS = OUTPUT_COLUMNS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("timeline", help="per-minute trials, failure rate and p50/p95/p99 latency")
    p.add_argument("--db", help="trial database (DuckDB); default: the db setting")
    p.add_argument("--from", dest="start", metavar="T", help="start (ISO 8601, naive = UTC; or e.g. 6h = six hours ago)")
    p.add_argument("--to", dest="end", metavar="T", help="end, exclusive (ISO 8601 or e.g. 1h)")
    p.add_argument("--last", metavar="DURATION", help="the last DURATION before --to (default: before the newest trial), e.g. 6h")
    p.add_argument("--bucket", metavar="WIDTH", help="bucket width, e.g. 1m, 5m, 1h (default: the bucket setting, wider for long ranges)")
    p.add_argument("--run-id", help="only this run (default range: the latest run)")
    p.add_argument("--model", help="only this model")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db)
    if not settings.db:
        raise UsageError("no trial database: pass --db PATH or set the db setting")
    if args.last and args.start:
        raise UsageError("--last and --from cannot be combined")
    last = parse_duration(args.last) if args.last else None
    if args.bucket:
        bucket_seconds(args.bucket)  # validate before touching the database
    with TrialSource(settings.db, settings) as source:
        _check_filters(source, args)
        start, end = _range(source, args, last, bucket_seconds(args.bucket or settings.bucket))
        bucket = args.bucket or _default_bucket(settings.bucket, start, end)
        records = source.rollup_records(start, end, bucket, run_id=args.run_id, model=args.model)
        if args.format == "json":
            sys.stdout.write(json_text(records, indent=1))
            sys.stdout.write("\n")
        elif args.format == "csv":
            sys.stdout.write(to_csv(records))
        else:
            fresh = source.freshness()
            print(header(fresh.source_path, start, end, bucket, _run_span(source, args), args.model))
            print(to_table(records))
    return 0


def _run_span(source: TrialSource, args: argparse.Namespace) -> RunSpan | None:
    """The run the table shows, when it shows a whole run (the default range, or --run-id without
    a narrower --from/--to/--last); None for any other range."""
    if args.start or args.end or args.last:
        return None
    run_id = args.run_id if args.run_id is not None else source.latest_run()
    return source.run_span(run_id=run_id, model=args.model)


def header(path: str, start: datetime, end: datetime, bucket: str, span: RunSpan | None, model: str | None) -> str:
    """One line: the database, then the run by its span (the same text as the Timeline page, the
    incidents and the report), or the range asked for; the bucket width."""
    if span is not None:
        what = span.label()
    else:
        what = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    return f"{path}  {what}" + (f"  model {model}" if model else "") + f"  bucket {bucket} (trials by start time)"


def _default_bucket(configured: str, start: datetime, end: datetime) -> str:
    wide = auto_bucket(start, end)
    return wide if bucket_seconds(wide) > bucket_seconds(configured) else configured


def _check_filters(source: TrialSource, args: argparse.Namespace) -> None:
    """An unknown run or model is a typo, not an empty timeline: say which ones exist."""
    if args.run_id is not None:
        runs = [span.run_id for span in source.run_spans() if span.run_id is not None]
        if args.run_id not in runs:
            shown = ", ".join(runs[:8]) + (" ..." if len(runs) > 8 else "")
            raise UsageError(f"no run {args.run_id!r} in {source.path}; runs: {shown or '(no run_id column)'}")
    if args.model is not None:
        models = source.models()
        if args.model not in models:
            raise UsageError(f"no model {args.model!r} in {source.path}; models: {', '.join(models) or '(no model column)'}")


def _range(source: TrialSource, args: argparse.Namespace, last: timedelta | None, width_s: int) -> tuple[datetime, datetime]:
    run_id = args.run_id
    if run_id is None and not (args.start or args.end or last):
        run_id = source.latest_run()
    bounds = source.time_bounds(run_id=run_id, model=args.model)
    trials, untimed = source.trial_counts(run_id=run_id, model=args.model)
    if bounds is None and untimed and not (args.start or args.end or last):
        raise DataError(f"none of the {trials:,} trials in {source.path} has a start time "
                        f"({source.mapping.time_column} is NULL in every row): nothing to put on a time axis")  # fmt: skip
    if untimed:
        print(f"note: {untimed:,} of {trials:,} trials have no start time ({source.mapping.time_column} is NULL) "
              "and are on no row below", file=sys.stderr)  # fmt: skip
    end = parse_time(args.end) if args.end else None
    if end is None:
        # the end of the newest trial's bucket, so it is included and --last counts whole buckets
        newest = bounds[1] if bounds else datetime.now(UTC)
        end = ceil_to_bucket(newest + timedelta(microseconds=1), width_s)
    if last is not None:
        start = end - last
    elif args.start:
        start = parse_time(args.start)
    else:
        start = bounds[0] if bounds else end - timedelta(hours=1)
    if end <= start:
        raise UsageError(f"empty range: {start.isoformat()} .. {end.isoformat()}")
    return start, end


def to_csv(records: list[dict[str, Any]]) -> str:
    return records_csv(records)


def to_table(records: list[dict[str, Any]]) -> str:
    headers = ("minute (UTC)", "trials", "ok", "timeouts", "errors", "fail %", "p50 ms", "p95 ms", "p99 ms", "max ms")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    rows = [
        (
            r["minute"].replace("T", " ").removesuffix(":00Z"),
            str(r["trials"]),
            str(r["ok"]),
            str(r["timeouts"]),
            str(r["errors"]),
            "-" if r["failure_rate"] is None else f"{100 * r['failure_rate']:.1f}",
            ms(r["p50_ms"]),
            ms(r["p95_ms"]),
            ms(r["p99_ms"]),
            ms(r["max_ms"]),
        )
        for r in records
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    return "\n".join(lines)
