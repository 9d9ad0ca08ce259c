"""The CLI imports only what the command being run uses (as harlequin checks its own imports).

`oasis-ops --help` lists every command from cli.COMMAND_TABLE without importing any command
module; `oasis-ops timeline` needs DuckDB (and pandas only for a range too big for one query),
never the sampler, psutil, httpx, Streamlit or Altair. Each case runs in a fresh interpreter, so nothing imported by the test run
itself can hide an import."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from oasis_ops import cli

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "numpy", "duckdb", "pyarrow", "psutil", "httpx", "streamlit", "altair", "oasis_ops.sampler", "oasis_ops.trials")

PROBE = """
import contextlib, io, json, sys
from oasis_ops.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(json.loads(sys.argv[1]))
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


def _loaded(argv: list[str]) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return set(json.loads(done.stdout))


def test_timeline_last_6h_answers_without_pandas(tmp_path: Path) -> None:
    """The live view's question, asked every few seconds from a shell: one DuckDB query, no pandas
    (0.25 s of its 0.3 s would be importing pandas)."""
    from datetime import timedelta

    from helpers_trials import T0, Row, create_canonical

    db = tmp_path / "trials.duckdb"
    create_canonical(db, [Row(T0 + timedelta(seconds=5 * i), 4000.0 + i, "ok") for i in range(2000)])
    argv = ["timeline", "--db", str(db), "--last", "6h", "--format", "csv"]
    assert _loaded(argv) == {"numpy", "duckdb", "oasis_ops.trials"}


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["--help"], set()),
        (["--version"], set()),
        (["settings", "--help"], set()),
        (["timeline", "--help"], {"pandas", "numpy", "duckdb", "pyarrow", "oasis_ops.trials"}),
        (["report", "--help"], {"pandas", "numpy", "duckdb", "pyarrow", "oasis_ops.trials", "psutil", "httpx", "oasis_ops.sampler"}),
    ],
)
def test_a_command_imports_only_what_it_uses(argv: list[str], allowed: set[str]) -> None:
    extra = _loaded(argv) - allowed
    assert not extra, f"`oasis-ops {' '.join(argv)}` imported {sorted(extra)}"


def test_the_table_lists_every_command_with_the_help_its_module_registers() -> None:
    registered: dict[str, str] = {}
    for module_name in cli.COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(f"oasis_ops.commands.{module_name}").register(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        for name in sub.choices:
            registered[name] = f"{module_name}: {helps.get(name)}"
    table = {name: f"{module}: {help_text}" for name, module, help_text in cli.COMMAND_TABLE}
    assert table == registered


def test_the_command_is_found_after_a_config_option() -> None:
    assert cli.command_in(["--config", "timeline", "status", "--db", "x"]) == "status"  # a file named timeline
    assert cli.command_in(["timeline", "--last", "6h"]) == "timeline"
    assert cli.command_in(["--help"]) is None
