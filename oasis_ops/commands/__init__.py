"""CLI subcommands; each module has `register(subparsers)` and sets `func` on its parser."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from oasis_ops.errors import UsageError
from oasis_ops.settings import Settings, load_settings


def number_in(kind: type[int] | type[float], low: float, high: float) -> Any:
    """An argparse type: an int or float within [low, high] (NaN and infinities refused)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def settings_from(args: argparse.Namespace, **flags: Any) -> Settings:
    """Resolve settings for a subcommand: file and environment, then these flags."""
    return load_settings(getattr(args, "config", None), flags=flags)


def note_missing_trial_db(settings: Settings, what: str) -> None:
    """Telemetry may be recorded before the runner creates its trial DB, but a typo in --db
    must not pass silently: say so, and refuse a directory that does not exist."""
    if not settings.db:
        return
    db = Path(str(settings.db)).expanduser()
    if db.exists():
        return
    if not db.parent.is_dir():
        raise UsageError(f"the trial database's directory does not exist: {db.parent} (check --db)")
    print(f"oasis-ops: note: trial database {db} does not exist (yet); {what}", file=sys.stderr)


def add_run_range_args(p: argparse.ArgumentParser, *, to_help: str = "end, exclusive; default: the latest run's last trial") -> None:
    """--db, --sidecar, --from/--to, --run-id, --model: the run a diagnosis command looks at."""
    p.add_argument("--db", help="trial database (DuckDB); default: the db setting")
    p.add_argument("--sidecar", help="telemetry sidecar (default: <db stem>.ops.duckdb beside it)")
    p.add_argument("--from", dest="start", metavar="T", help="start (ISO 8601, naive = UTC); default: the latest run's first trial")
    p.add_argument("--to", dest="end", metavar="T", help=to_help)
    p.add_argument("--run-id", help="only this run (default: the latest)")
    p.add_argument("--model", help="only this model")


def run_range(args: argparse.Namespace, **flags: Any) -> tuple[Settings, Any, Any]:
    """(settings with --db/--sidecar, start, end) of add_run_range_args' flags; start and end are
    both None (the latest run) or both set, end after start; a database is required."""
    from oasis_ops.trials import parse_time

    settings = settings_from(args, db=args.db, sidecar=args.sidecar, **flags)
    if not settings.db:
        raise UsageError("no trial database: pass --db PATH or set the db setting")
    if bool(args.start) != bool(args.end):
        raise UsageError("give both --from and --to, or neither (the latest run)")
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    if start and end and end <= start:
        raise UsageError("--to must be after --from")
    return settings, start, end
