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
