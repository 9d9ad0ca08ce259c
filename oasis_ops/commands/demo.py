"""`oasis-ops demo ...`: the built-in demo world.

`oasis-ops demo` (no subcommand) starts the whole world and the dashboard; `demo ollama` runs
the Ollama emulator alone; `demo replay` writes the incident replay. Each subcommand's work
lives in oasis_ops.demo; this module only parses arguments.
"""

from __future__ import annotations

import argparse
import importlib

# (subcommand, module under oasis_ops.demo providing `add_arguments(parser)` and `main(args)`)
SUBCOMMANDS = (
    ("ollama", "emulator_cli", "run the Ollama emulator alone in the foreground"),
    ("replay", "replay", "write the incident replay (trial DB, sidecar, server.log)"),
    ("fault", "faults_cli", "switch a fault on or off in a running emulator"),
    ("harness", "harness", "run the simulated OASIS harness against an Ollama (or the emulator)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the built-in demo world (what `make run` starts)")
    try:
        world = importlib.import_module("oasis_ops.demo.world")
    except ModuleNotFoundError as exc:
        if exc.name != "oasis_ops.demo.world":
            raise
    else:
        world.add_arguments(p)
        p.set_defaults(func=world.main)
    demo_sub = p.add_subparsers(dest="demo_command", metavar="DEMO_COMMAND")
    for name, module_name, help_text in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"oasis_ops.demo.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"oasis_ops.demo.{module_name}":
                continue
            raise
        sp = demo_sub.add_parser(name, help=help_text)
        module.add_arguments(sp)
        sp.set_defaults(func=module.main)
