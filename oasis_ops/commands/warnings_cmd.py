"""`oasis-ops warnings`: the early warnings the console raised, or would have raised, over a range.

A thin layer over oasis_ops.earlywarning: the rules are evaluated every 30 s of the range with only
the data up to each moment (the live sampler runs the same code every tick), so a past day shows
what the console would have said, and when.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from oasis_ops.commands import add_run_range_args, run_range
from oasis_ops.fmt import json_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warnings", help="early warnings over a run: what was seen coming, when, and what to do")
    add_run_range_args(p, to_help="end, exclusive; default: 30 minutes after the latest run's last trial")
    p.add_argument("--json", action="store_true", help="print the warnings as a JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from oasis_ops.diagnosis.thresholds import STOPPING_LOOKAHEAD
    from oasis_ops.diagnosis.windows import default_range
    from oasis_ops.earlywarning.engine import first_failing_minute, scan_warnings
    from oasis_ops.earlywarning.inputs import load_inputs
    from oasis_ops.sidecar import Sidecar, sidecar_path_for
    from oasis_ops.trials import TrialSource

    settings, start, end = run_range(args)
    source = TrialSource(Path(settings.db), settings)
    try:
        run_id = args.run_id
        if start is None or end is None:
            found = default_range(source, run_id, args.model)
            if found is None:
                return _emit(args, [], [], None, "no trials: nothing to warn about")
            start, last, run_id = found
            end = last + STOPPING_LOOKAHEAD  # a run often ends in its worst moment: look past it
        assert start is not None and end is not None
        sidecar = Sidecar(sidecar_path_for(settings.db, settings), settings)
        inputs = load_inputs(sidecar, source, start, end, run_id=run_id, model=args.model)
        warnings, notes = scan_warnings(inputs, start, end, settings)
        failing = first_failing_minute(inputs)
    finally:
        source.close()
    head = f"{start:%Y-%m-%d %H:%M} .. {end:%H:%M} UTC" + (f"  run {run_id}" if run_id else "")
    return _emit(args, [w.as_dict() for w in warnings], notes, failing, head)


def lead_text(first_at: datetime | None, failing: datetime | None) -> str | None:
    """'first warning 17:36 UTC, 22 min before the first failing minute (17:58)' or None."""
    if first_at is None:
        return None
    if failing is None:
        return f"first warning {first_at:%H:%M} UTC; no minute in which most trials failed"
    lead_min = (failing - first_at).total_seconds() / 60
    if lead_min > 0:
        return f"first warning {first_at:%H:%M} UTC, {lead_min:.0f} min before the first minute in which most trials failed ({failing:%H:%M})"
    return f"first warning {first_at:%H:%M} UTC, {-lead_min:.0f} min after the first minute in which most trials failed ({failing:%H:%M})"


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], notes: list[str], failing: datetime | None, head: str) -> int:
    if args.json:
        sys.stdout.write(json_text(rows, indent=1) + "\n")
        for note in notes:
            print(f"oasis-ops: note: {note}", file=sys.stderr)
        return 0
    lines = [head]
    lines += [f"note: {note}" for note in notes]
    if not rows:
        lines.append("No warning: nothing was seen coming in this range.")
    for row in rows:
        at = row["at"][11:16]
        eta = f"  eta {row['eta'][11:16]} UTC" if row["eta"] else ""
        cleared = f"cleared {row['cleared_at'][11:16]}" if row["cleared_at"] else "still active at the range's end"
        lines.append(f"{at} UTC  {row['severity'].upper():<8} {row['kind']}{eta}  ({cleared})")
        lines.append(f"    {row['message']}")
        lines.append(f"    action: oasis-ops {row['action']}")
    first = datetime.fromisoformat(rows[0]["at"].replace("Z", "+00:00")) if rows else None
    lead = lead_text(first, failing)
    if lead:
        lines.append(lead)
    print("\n".join(lines))
    return 0
