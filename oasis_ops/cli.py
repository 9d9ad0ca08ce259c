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

# Every command: (name, module under oasis_ops.commands, help). `oasis-ops --help` lists them from
# here, importing no command module; running a command imports only its own module (and what that
# needs): `oasis-ops timeline` never loads the sampler, psutil or httpx. tests/test_lazy_imports.py
# keeps these help texts equal to the ones the modules register.
COMMAND_TABLE: tuple[tuple[str, str, str], ...] = (
    ("dashboard", "dashboard", "serve the dashboard (127.0.0.1 unless --host says otherwise)"),
    ("timeline", "timeline", "per-minute trials, failure rate and p50/p95/p99 latency"),
    ("sample", "sample", "run the telemetry sampler without the dashboard"),
    ("status", "status", "one snapshot: Ollama, models and runners, host memory, flash attention"),
    ("demo", "demo", "run the built-in demo world (what `make run` starts)"),
    ("proxy", "proxy", "an Ollama proxy that records every model call as a trial and obeys the control channel"),
    ("evict", "actions", "soft-unload a model (keep_alive 0); exit 3 when it stays Stopping"),
    ("kill-runner", "actions", "SIGKILL the one verified runner process of a model"),
    ("recover", "actions", "evict, wait, hard-kill if still Stopping, check a new runner answers"),
    ("concurrency", "actions", "set the live runner's max concurrency (control channel)"),
    ("pause", "actions", "pause the live runner (in-flight trials finish)"),
    ("resume", "actions", "resume the live runner"),
    ("watchdog", "actions", "run the watchdog headless (opt-in automatic recovery)"),
    ("ingest-logs", "ingest", "ingest Ollama's server.log and the harness log into the sidecar"),
    ("incidents", "incidents", "find incident windows in a run and diagnose their causes"),
    ("warnings", "warnings_cmd", "early warnings over a run: what was seen coming, when, and what to do"),
    ("preflight", "preflight", "check memory, swap, pressure, flash attention, runners and concurrency before a run"),
    ("report", "report", "write the post-mortem report of a run (.md or .html)"),
    ("settings", "settings_cmd", "show the resolved settings and their origins"),
)
COMMANDS = tuple(dict.fromkeys(module for _, module, _ in COMMAND_TABLE))  # module names, in order


def command_in(argv: Sequence[str]) -> str | None:
    """The command named in `argv` (the first word that is not an option or --config's value)."""
    names = {name for name, _, _ in COMMAND_TABLE}
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--config":
            skip = True
        elif token.startswith("-"):
            continue
        else:
            return token if token in names else None
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"oasis-ops: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given `argv`, only the named command's module is imported (the others
    are listed by name and help, from COMMAND_TABLE)."""
    parser = _Parser(prog="oasis-ops", description="Operations console for Ollama-backed evaluation runs.")
    parser.add_argument("--version", action="version", version=f"oasis-ops {__version__}")
    parser.add_argument("--config", help="settings file (TOML); also OASIS_OPS_CONFIG")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if argv is None:
        wanted = list(COMMANDS)
    else:
        chosen = command_in(argv)
        wanted = [module for name, module, _ in COMMAND_TABLE if name == chosen][:1]
    for name in wanted:
        try:
            module = importlib.import_module(f"oasis_ops.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"oasis_ops.commands.{name}":
                continue
            raise
        module.register(sub)
    for name, _, help_text in COMMAND_TABLE:  # the others: named, for --help, never run
        if name not in sub.choices:
            sub.add_parser(name, help=help_text)
    # `--config` works after the subcommand too (`oasis-ops timeline --config f.toml ...`);
    # SUPPRESS keeps a value given before the subcommand when it is not repeated after it.
    for subparser in sub.choices.values():
        subparser.add_argument("--config", default=argparse.SUPPRESS, help="settings file (TOML); also OASIS_OPS_CONFIG")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
