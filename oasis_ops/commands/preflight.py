"""`oasis-ops preflight`: go / no-go before a long Ollama run (exit 0 go, 1 blocked, 3 warnings)."""

from __future__ import annotations

import argparse

from oasis_ops.commands import number_in, settings_from
from oasis_ops.control import ControlChannel, control_dir_for
from oasis_ops.diagnosis.preflight import Sources, format_text, run_preflight
from oasis_ops.errors import UsageError
from oasis_ops.fmt import json_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preflight", help="check memory, swap, pressure, flash attention, runners and concurrency before a run")
    p.add_argument("--model", help="the model the run will use (e.g. gemma4:e4b): its size counts against free memory")
    p.add_argument("--min-free-gb", type=number_in(float, 0, 1_000_000), default=8.0, help="free memory a long run needs at least, GB (default 8)")
    p.add_argument("--db", help="trial database: its control channel says the runner's concurrency")
    p.add_argument("--server-log", help="Ollama's server.log (flash attention setting); default: the server_log setting")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.min_free_gb < 0:
        raise UsageError("--min-free-gb must be >= 0")
    settings = settings_from(args, db=args.db, server_log=args.server_log)
    state = None
    if settings.db or settings.control_dir:
        directory = control_dir_for(settings.db or None, settings)
        if directory.is_dir():
            state = ControlChannel(directory).runner_state()
    result = run_preflight(settings, model=args.model, min_free_gb=args.min_free_gb, sources=Sources(runner_state=state))
    if args.json:
        print(json_text(result.as_dict(), indent=1))
    else:
        print(format_text(result))
    return result.exit_code
