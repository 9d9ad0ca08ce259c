"""`oasis-ops status [--db PATH] [--json]`: one snapshot of Ollama, runners and host memory."""

from __future__ import annotations

import argparse

from oasis_ops.commands import settings_from
from oasis_ops.fmt import json_text
from oasis_ops.status import format_status, sidecar_for, take_status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="one snapshot: Ollama, models and runners, host memory, flash attention")
    p.add_argument("--db", help="trial database whose sidecar gives the swap-out rate and sampler state")
    p.add_argument("--json", action="store_true", help="print JSON (keys documented in the README)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, db=args.db)
    snapshot = take_status(settings, sidecar_path=sidecar_for(settings.db or None, settings))
    if args.json:
        print(json_text(snapshot, indent=2))
    else:
        print(format_status(snapshot))
    return 1 if snapshot["errors"] else 0
