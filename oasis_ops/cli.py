"""The `oasis-ops` command: a thin layer over the library.

Each subcommand lives in `oasis_ops/commands/<name>.py` with `register(subparsers)`; it gets the
parsed arguments and resolved settings and returns an exit code. Library errors become one-line
messages on stderr with the error's exit code (0 done, 1 failed or refused, 2 bad usage,
3 not acknowledged or still stuck).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from oasis_ops import __version__
from oasis_ops.errors import OasisOpsError

# Module names under oasis_ops.commands; a missing module is skipped so partial trees still run.
COMMANDS = (
    "dashboard",
    "timeline",
    "sample",
    "status",
    "demo",
    "actions",
    "ingest",
    "incidents",
    "preflight",
    "report",
    "settings_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"oasis-ops: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="oasis-ops", description="Operations console for Ollama-backed evaluation runs.")
    parser.add_argument("--version", action="version", version=f"oasis-ops {__version__}")
    parser.add_argument("--config", help="settings file (TOML); also OASIS_OPS_CONFIG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"oasis_ops.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"oasis_ops.commands.{name}":
                continue
            raise
        module.register(sub)
    # `--config` works after the subcommand too (`oasis-ops timeline --config f.toml ...`);
    # SUPPRESS keeps a value given before the subcommand when it is not repeated after it.
    for subparser in sub.choices.values():
        subparser.add_argument("--config", default=argparse.SUPPRESS, help="settings file (TOML); also OASIS_OPS_CONFIG")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below, not at exit
        return code
    except OasisOpsError as exc:
        print(f"oasis-ops: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `oasis-ops timeline ... | head`: the reader left; not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
